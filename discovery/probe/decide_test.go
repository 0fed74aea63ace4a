package probe

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/topology"
)

func newProber(s *Source) *prober {
	return &prober{Source: s, log: zap.NewNop(), unwell: map[string]string{}, roles: map[string]topology.Role{}}
}

func TestDecideNeverTwoWriters(t *testing.T) {
	hosts := []string{"a:1", "b:1", "c:1"}
	up := result{reachable: true}
	standby := result{reachable: true, inRecovery: true}
	for _, tc := range []struct {
		name  string
		rs    []result
		known string
		want  string
		ok    bool // the writer is healthy
	}{
		{"one primary", []result{up, standby, standby}, "", "a:1", true},
		{"writer lost, kept unhealthy", []result{{}, standby, standby}, "a:1", "a:1", false},
		{"writer demoted", []result{standby, standby, standby}, "a:1", "", false},
		{"promoted", []result{{}, up, standby}, "a:1", "b:1", true},
		{"old primary back, new one known", []result{up, up, standby}, "b:1", "b:1", true},
		{"two primaries, none known", []result{up, up, standby}, "c:1", "", false},
	} {
		p := newProber(&Source{Hosts: hosts})
		p.writer = tc.known
		snap := p.decide(hosts, tc.rs, nil, time.Now())
		got, ok := "", false
		if snap.Writer != nil {
			got, ok = snap.Writer.Addr, snap.Writer.Healthy
		}
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: writer %q healthy %v, want %q %v", tc.name, got, ok, tc.want, tc.ok)
		}
		for _, r := range snap.Replicas {
			if r.Addr == got {
				t.Errorf("%s: %s is writer and replica", tc.name, got)
			}
		}
	}
}

func TestDecideFencesAClaimedWriterInRecovery(t *testing.T) {
	cands := []string{"a:1", "b:1"}
	claim := &topology.Snapshot{
		Writer:   &topology.Endpoint{Addr: "a:1", Role: topology.Writer, Healthy: true, Source: "consul"},
		Replicas: []topology.Endpoint{{Addr: "b:1", Role: topology.Replica, Healthy: true, Source: "consul"}},
	}
	standby := result{reachable: true, inRecovery: true}
	for _, tc := range []struct {
		name       string
		a, b       result
		writer     string
		healthy    bool
		replicaWhy string
	}{
		{"as claimed", result{reachable: true}, standby, "a:1", true, ""},
		{"claimed writer in recovery", standby, standby, "", false, ""},
		{"claimed writer unreachable", result{}, standby, "a:1", false, ""},
		{"replica promoted behind discovery's back", standby, result{reachable: true}, "", false, "not in recovery"},
	} {
		p := newProber(&Source{Promotion: ByDiscovery})
		snap := p.decide(cands, []result{tc.a, tc.b}, claim, time.Now())
		got, ok := "", false
		if snap.Writer != nil {
			got, ok = snap.Writer.Addr, snap.Writer.Healthy
		}
		if got != tc.writer || ok != tc.healthy {
			t.Errorf("%s: writer %q healthy %v, want %q %v", tc.name, got, ok, tc.writer, tc.healthy)
		}
		if len(snap.Replicas) != 1 || snap.Replicas[0].Why != tc.replicaWhy || snap.Replicas[0].Source != "consul" {
			t.Errorf("%s: replicas %+v, want b:1 with why %q", tc.name, snap.Replicas, tc.replicaWhy)
		}
	}
}

func TestDecideBansALaggingReplica(t *testing.T) {
	cands := []string{"a:1", "b:1"}
	p := newProber(&Source{Hosts: cands, MaxLag: 2 * time.Second})
	t0 := time.Now()
	// The writer moves on every second; the replica stays at 100.
	var snap topology.Snapshot
	for i := range 5 {
		now := t0.Add(time.Duration(i) * time.Second)
		snap = p.decide(cands, []result{{reachable: true, lsn: uint64(200 + i)}, {reachable: true, inRecovery: true, lsn: 100}}, nil, now)
		wantHealthy := i <= 2 // behind the sample of t0 by i seconds
		if got := snap.Replicas[0]; got.Healthy != wantHealthy {
			t.Fatalf("after %ds: replica %+v, want healthy %v", i, got, wantHealthy)
		}
	}
	if snap.Replicas[0].Why != "lagging" {
		t.Errorf("why = %q", snap.Replicas[0].Why)
	}
	// Caught up: healthy again.
	now := t0.Add(5 * time.Second)
	snap = p.decide(cands, []result{{reachable: true, lsn: 205}, {reachable: true, inRecovery: true, lsn: 205}}, nil, now)
	if !snap.Replicas[0].Healthy {
		t.Errorf("caught up but %+v", snap.Replicas[0])
	}
	if l := p.lag(result{lsn: 204}, now); l.Bytes != 1 || l.Seconds != 0 {
		t.Errorf("lag behind the newest sample only: %+v", l)
	}
}

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]uint64{"0/0": 0, "0/16B3748": 0x16B3748, "1/0": 1 << 32, "FFFFFFFF/FFFFFFFF": ^uint64(0)} {
		if got, err := ParseLSN(in); err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0", "x/1", "1/2/3", "100000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

// A server that answered before and then times out once is kept as it
// was; a second timeout, or a refused connection at once, makes it
// unreachable.
func TestProbeTimeoutNeedsTwoStrikes(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	hung := silent.Addr().String()
	cands := []string{hung, refused}
	if cands[0] > cands[1] {
		cands[0], cands[1] = cands[1], cands[0]
	}
	p := newProber(&Source{Endpoint: pool.Endpoint{User: "monitor", Database: "postgres"}})
	p.conns = map[string]*pool.Conn{}
	p.last, p.strikes = map[string]result{}, map[string]int{}
	for _, a := range cands {
		p.last[a] = result{reachable: true, inRecovery: true}
	}
	at := func(rs []result, addr string) result { return rs[slices.Index(cands, addr)] }
	rs := p.probeAll(context.Background(), cands, 200*time.Millisecond)
	if !at(rs, hung).reachable {
		t.Error("one timeout made the server unreachable")
	}
	if at(rs, refused).reachable {
		t.Error("a refused connection kept the server reachable")
	}
	rs = p.probeAll(context.Background(), cands, 200*time.Millisecond)
	if at(rs, hung).reachable {
		t.Error("two timeouts in a row kept the server reachable")
	}
}
