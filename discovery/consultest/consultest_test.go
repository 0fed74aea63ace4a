package consultest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// passing returns the passing instances of service, by the health endpoint
// with passing=true.
func passing(t *testing.T, c *api.Client, service string) []*api.ServiceEntry {
	t.Helper()
	entries, _, err := c.Health().Service(service, "", true, nil)
	if err != nil {
		t.Fatalf("health of %s: %v", service, err)
	}
	return entries
}

func checkInstance(t *testing.T, entries []*api.ServiceEntry, id, addr string, port int, tags []string, meta map[string]string) {
	t.Helper()
	if len(entries) != 1 {
		t.Fatalf("got %d passing instances, want 1: %+v", len(entries), entries)
	}
	s := entries[0].Service
	if s.ID != id || s.Address != addr || s.Port != port || !slices.Equal(s.Tags, tags) {
		t.Fatalf("instance = {ID:%q Address:%q Port:%d Tags:%q}, want {ID:%q Address:%q Port:%d Tags:%q}",
			s.ID, s.Address, s.Port, s.Tags, id, addr, port, tags)
	}
	for k, v := range meta {
		if s.Meta[k] != v {
			t.Fatalf("instance meta = %v, want %v", s.Meta, meta)
		}
	}
}

func TestStartRegisterStopRestart(t *testing.T) {
	a := Start(t)
	addr := a.Addr()
	c := a.Client(t)

	leader, err := c.Status().Leader()
	if err != nil || leader == "" {
		t.Fatalf("leader = %q, %v; want a leader", leader, err)
	}

	tags := []string{"primary"}
	meta := map[string]string{"role": "writer"}
	a.Register(t, "pg-1", "pg", "127.0.0.1", 5432, tags, meta)
	checkInstance(t, passing(t, c, "pg"), "pg-1", "127.0.0.1", 5432, tags, meta)

	a.Stop()
	if _, err := c.Status().Leader(); err == nil {
		t.Fatalf("the HTTP API at %s still answers after Stop", addr)
	}
	a.Stop() // a second Stop does nothing

	a.Restart(t)
	if got := a.Addr(); got != addr {
		t.Fatalf("Addr after Restart = %s, want %s", got, addr)
	}
	if leader, err := c.Status().Leader(); err != nil || leader == "" {
		t.Fatalf("after Restart: leader = %q, %v; want a leader", leader, err)
	}
	// The data directory kept the registration.
	checkInstance(t, passing(t, c, "pg"), "pg-1", "127.0.0.1", 5432, tags, meta)

	a.Deregister(t, "pg-1")
	if got := passing(t, c, "pg"); len(got) != 0 {
		t.Fatalf("after Deregister: %d passing instances, want 0", len(got))
	}

	// Restart also works on a running agent.
	a.Restart(t)
	if got := passing(t, c, "pg"); len(got) != 0 {
		t.Fatalf("after the second Restart: %d passing instances, want 0", len(got))
	}
}

// TestAgentsAreSeparate starts two agents at once: each is a cluster of its
// own, with its own ports and node name.
func TestAgentsAreSeparate(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() || a.NodeName() == b.NodeName() {
		t.Fatalf("agents share an address or node name: %s %s, %s %s", a.Addr(), a.NodeName(), b.Addr(), b.NodeName())
	}
	a.Register(t, "only-a", "svc", "127.0.0.1", 1000, nil, nil)
	if got := passing(t, b.Client(t), "svc"); len(got) != 0 {
		t.Fatalf("agent b lists %d instances registered with agent a", len(got))
	}
	for _, p := range a.ports.list() {
		if p < portMin || p >= portMax {
			t.Fatalf("port %d is outside %d-%d", p, portMin, portMax-1)
		}
	}
}

// TestStartAgentKeepsDirAndPorts starts an agent outside testing.TB, as
// `make run-consul` does: on fixed ports, with the UI, in a directory of
// the caller's. Started again on the same options it has the same catalog.
func TestStartAgentKeepsDirAndPorts(t *testing.T) {
	p, err := pickPorts()
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Dir: filepath.Join(t.TempDir(), "consul"), NodeName: "kept-node", Ports: p, UI: true}
	a, err := StartAgent(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if want := fmt.Sprintf("127.0.0.1:%d", p.HTTP); a.Addr() != want || a.NodeName() != "kept-node" {
		t.Fatalf("agent on %s named %s, want %s named kept-node", a.Addr(), a.NodeName(), want)
	}
	if err := a.RegisterService("pg-1", "pg", "127.0.0.1", 5432, []string{"primary"}, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + a.Addr() + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/: %s, want 200 with the UI on", resp.Status)
	}
	a.Stop()

	b, err := StartAgent(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	c, err := b.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	checkInstance(t, passing(t, c, "pg"), "pg-1", "127.0.0.1", 5432, []string{"primary"}, nil)
	if err := b.DeregisterService("pg-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeregisterService("pg-1"); err == nil {
		t.Error("deregistering an unknown instance succeeded")
	}

	for _, bad := range []Options{{}, {Dir: opts.Dir, Ports: Ports{HTTP: 1}}, {Dir: opts.Dir, Ports: Ports{1, 2, 3, 4, 5, 5}}} {
		if a, err := StartAgent(bad); err == nil {
			a.Stop()
			t.Errorf("StartAgent(%+v) succeeded", bad)
		}
	}
}

// recorder is a testing.TB that records Fatalf and Skip instead of acting
// on them, and ends the goroutine as they would.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.failed, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Skip(args ...any)                 { r.skipped = true; runtime.Goexit() }
func (r *recorder) Skipf(format string, args ...any) { r.skipped = true; runtime.Goexit() }
func (r *recorder) SkipNow()                         { r.skipped = true; runtime.Goexit() }

// TestMissingBinaryFails checks that a missing agent fails the test, saying
// to run `make deps`, rather than skipping it.
func TestMissingBinaryFails(t *testing.T) {
	t.Setenv(BinEnv, t.TempDir()+"/no-consul")
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(r)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return")
	}
	if r.skipped || !r.failed {
		t.Fatalf("Start with no binary: failed=%v skipped=%v, want a failure", r.failed, r.skipped)
	}
	if !strings.Contains(r.msg, "make deps") || !strings.Contains(r.msg, BinEnv) {
		t.Fatalf("failure message %q does not say to run `make deps` or name %s", r.msg, BinEnv)
	}
}

func TestFindBinaryInRepoRoot(t *testing.T) {
	t.Setenv(BinEnv, "")
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd() // the package directory, discovery/consultest
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Dir(filepath.Dir(wd)); root != want {
		t.Fatalf("repoRoot = %s, want %s", root, want)
	}
	bin, err := findBinary()
	if err != nil {
		t.Fatalf("%v", err) // `make deps` builds it
	}
	if want := filepath.Join(root, "bin", "consul"); bin != want {
		t.Fatalf("findBinary = %s, want %s", bin, want)
	}
}

func TestDeclaresModule(t *testing.T) {
	for _, tc := range []struct {
		gomod string
		want  bool
	}{
		{"module github.com/sluicedb/sluice\n\ngo 1.26.8\n", true},
		{"// comment\nmodule \"github.com/sluicedb/sluice\"\n", true},
		{"module github.com/sluicedb/sluice/discovery/consul/agent\n", false},
		{"go 1.26\n", false},
	} {
		if got := declaresModule([]byte(tc.gomod), modulePath); got != tc.want {
			t.Errorf("declaresModule(%q) = %v, want %v", tc.gomod, got, tc.want)
		}
	}
}
