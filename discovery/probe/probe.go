// Package probe gives the servers the final word on a cluster's topology.
// Every interval it asks each candidate, on its own connection with the
// monitor credentials, whether it is in recovery and how far it has
// replayed (schema-qualified SQL, so a search_path cannot redirect it).
//
// Candidates come from a list of hosts, from a discovery source (Consul,
// static configuration) that claims roles, or both. With PromotionProbe
// the one reachable server not in recovery is the writer, as libpq's
// target_session_attrs=read-write finds it. With PromotionDiscovery the
// writer is the one discovery names, and probing only fences it: a
// claimed writer that is in recovery never receives a write. Either way,
// two servers out of recovery at once (a split brain during a failover)
// never make two writers: the writer already known stays, and if it is not
// one of them there is none until only one remains.
//
// Replicas that cannot be reached, that are not in recovery, or that lag
// more than the limits are kept in the snapshot but marked unhealthy, so
// the reader pool skips them and takes them back when they recover.
package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/topology"
)

// DefaultInterval is health_check_interval's default.
const DefaultInterval = time.Second

// Promotion says who names the writer.
type Promotion int

const (
	// ByProbe takes the reachable server not in recovery as the writer.
	ByProbe Promotion = iota
	// ByDiscovery takes the writer discovery names, if the probes agree
	// it is not in recovery.
	ByDiscovery
)

// Source probes a cluster's candidates.
type Source struct {
	// Hosts are candidates whose role only the probes find (host:port).
	Hosts []string
	// Discover, when set, names candidates and claims their roles.
	Discover topology.Source
	// Promotion says who names the writer.
	Promotion Promotion
	// MaxLag and MaxLagBytes mark a replica unhealthy while it is further
	// behind; zero means no limit.
	MaxLag      time.Duration
	MaxLagBytes int64
	// Endpoint is the template of a probe connection: database, monitor
	// user and password, TLS and connect timeout (Addr is each host).
	Endpoint pool.Endpoint
	// Interval is the time between probes; zero is DefaultInterval.
	Interval time.Duration
	Log      *zap.Logger
}

// probeSQL asks a server its role and position in one round trip: in
// recovery, its replayed (replica) or current (writer) WAL position, and
// whether it has received WAL it has not replayed yet, with the seconds
// since the last transaction it replayed.
const probeSQL = `SELECT s.r, CASE WHEN s.r THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END,
 CASE WHEN s.r THEN COALESCE(pg_catalog.pg_last_wal_receive_lsn() OPERATOR(pg_catalog.>) pg_catalog.pg_last_wal_replay_lsn(), false) ELSE false END,
 COALESCE(EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp()), 0)
 FROM (SELECT pg_catalog.pg_is_in_recovery() AS r) s`

// result is what one probe found.
type result struct {
	reachable, inRecovery bool
	// definite: the probe failed in a way that leaves no doubt (the
	// connection refused or closed), not by running out of time.
	definite    bool
	lsn         uint64 // replayed (replica) or current (writer) position
	behind      bool   // received WAL not yet replayed
	sinceReplay float64
}

// sample is the writer's WAL position at one moment.
type sample struct {
	at  time.Time
	lsn uint64
}

// historyLen bounds the writer positions kept to measure lag in seconds.
const historyLen = 600

// prober is the state of one Run.
type prober struct {
	*Source
	log       *zap.Logger
	conns     map[string]*pool.Conn
	writer    string                   // the last healthy writer published
	hadWriter bool                     // whether the last snapshot had a healthy writer
	history   []sample                 // the writer's positions, oldest first
	unwell    map[string]string        // why each unhealthy endpoint is, as last logged
	roles     map[string]topology.Role // the role each address last had
	last      map[string]result        // each address's last successful probe
	strikes   map[string]int           // probes in a row that timed out, by address
}

// minProbeTimeout is the least time a probe's query is given, however
// short the interval.
const minProbeTimeout = time.Second

// maxStrikes is how many probes in a row must time out before a server
// that answered before counts as unreachable; a refused or closed
// connection counts at once. One slow probe on a loaded machine does not
// take a server out.
const maxStrikes = 2

// Run implements topology.Source.
func (s *Source) Run(ctx context.Context, sink topology.Sink) {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	p := &prober{Source: s, log: s.Log, conns: map[string]*pool.Conn{}, unwell: map[string]string{}, roles: map[string]topology.Role{},
		last: map[string]result{}, strikes: map[string]int{}}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	defer func() {
		for _, c := range p.conns {
			c.Close()
		}
	}()
	claims := make(chan topology.Snapshot, 1)
	var claim *topology.Snapshot
	if s.Discover != nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Discover.Run(ctx, relay{Sink: sink, latest: claims})
		}()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if s.Discover == nil || claim != nil {
			cands := candidates(s.Hosts, claim)
			now := time.Now()
			rs := p.probeAll(ctx, cands, interval)
			if ctx.Err() != nil {
				return
			}
			snap := p.decide(cands, rs, claim, now)
			p.reportLags(sink, cands, rs, now)
			sink.Publish(snap)
			sink.ReportStatus(topology.Status{Source: "probe", LastOK: now})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case c := <-claims:
			// Discovery changed its mind: probe the new claim at once,
			// so a new writer is fenced or taken without waiting.
			claim = &c
		case <-sink.Suspicions():
			// Core could not reach an endpoint: look again now, but not
			// more often than every minSuspicionGap.
			select {
			case <-ctx.Done():
				return
			case <-time.After(minSuspicionGap):
			}
		}
	}
}

// minSuspicionGap bounds how often core's suspicions make the prober look
// again between its ticks.
const minSuspicionGap = 20 * time.Millisecond

// relay passes a discovery source's reports on, keeping only its latest
// snapshot for the prober.
type relay struct {
	topology.Sink
	latest chan topology.Snapshot
}

func (r relay) Publish(s topology.Snapshot) bool {
	select {
	case <-r.latest:
	default:
	}
	r.latest <- s
	return true
}

// candidates returns the addresses to probe: the hosts and those the
// claim names, each once.
func candidates(hosts []string, claim *topology.Snapshot) []string {
	out := slices.Clone(hosts)
	if claim != nil {
		if claim.Writer != nil {
			out = append(out, claim.Writer.Addr)
		}
		for _, r := range claim.Replicas {
			out = append(out, r.Addr)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// probeAll probes every candidate at once, each within the interval, and
// closes the connections of addresses no longer probed.
func (p *prober) probeAll(ctx context.Context, cands []string, limit time.Duration) []result {
	for a, c := range p.conns {
		if !slices.Contains(cands, a) {
			c.Close()
			delete(p.conns, a)
		}
	}
	out := make([]result, len(cands))
	conns := make([]*pool.Conn, len(cands))
	var wg sync.WaitGroup
	for i, h := range cands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], conns[i] = p.probe(ctx, h, p.conns[h], limit)
		}()
	}
	wg.Wait()
	for i, h := range cands {
		if conns[i] != nil {
			p.conns[h] = conns[i]
		} else {
			delete(p.conns, h)
		}
		r := out[i]
		switch last, ok := p.last[h]; {
		case r.reachable:
			p.last[h], p.strikes[h] = r, 0
		case !r.definite && ok && p.strikes[h]+1 < maxStrikes:
			p.strikes[h]++
			out[i] = last // timed out once: taken as it was
		default:
			delete(p.last, h)
			delete(p.strikes, h)
		}
	}
	return out
}

// probe asks one host, opening a connection when it has none; a failed
// probe closes it.
func (p *prober) probe(ctx context.Context, host string, c *pool.Conn, limit time.Duration) (result, *pool.Conn) {
	if c == nil {
		// Opening a connection (with SCRAM's key derivation) may take
		// longer than a short probe interval: it gets at least
		// minProbeTimeout (within connect_timeout), and the connection is
		// kept for the next probes. A round waits for its slowest probe,
		// so no probe may take much longer than that.
		ep := p.Endpoint
		ep.Addr = host
		if t := max(limit, minProbeTimeout); ep.ConnectTimeout <= 0 || ep.ConnectTimeout > t {
			ep.ConnectTimeout = t
		}
		var err error
		if c, err = pool.Connect(ctx, ep); err != nil {
			return result{definite: !isTimeout(err)}, nil
		}
	}
	c.SetDeadline(time.Now().Add(max(limit, minProbeTimeout)))
	row, err := c.QueryRow(probeSQL)
	if err != nil || len(row) != 4 {
		c.Close()
		return result{definite: err != nil && !isTimeout(err)}, nil
	}
	c.SetDeadline(time.Time{})
	r := result{reachable: true, inRecovery: row[0] == "t", behind: row[2] == "t"}
	r.lsn, _ = ParseLSN(row[1])
	r.sinceReplay, _ = strconv.ParseFloat(row[3], 64)
	return r, c
}

// isTimeout reports a failure by running out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// decide makes the snapshot of what the probes found.
func (p *prober) decide(cands []string, rs []result, claim *topology.Snapshot, now time.Time) topology.Snapshot {
	var snap topology.Snapshot
	res := func(addr string) (result, bool) {
		i, ok := slices.BinarySearch(cands, addr)
		if !ok {
			return result{}, false
		}
		return rs[i], true
	}
	claimedWriter := ""
	if claim != nil && claim.Writer != nil {
		claimedWriter = claim.Writer.Addr
	}
	writer := ""
	var writerWhy string
	if p.Promotion == ByDiscovery {
		if claimedWriter != "" {
			switch r, _ := res(claimedWriter); {
			case !r.reachable:
				writer, writerWhy = claimedWriter, "unreachable"
			case r.inRecovery:
				// Fenced: discovery calls it the writer, but it is a
				// standby (demoted, or not promoted yet).
				writerWhy = "in recovery"
			default:
				writer = claimedWriter
			}
		}
	} else {
		var primaries []string
		for i, r := range rs {
			if r.reachable && !r.inRecovery {
				primaries = append(primaries, cands[i])
			}
		}
		switch {
		case len(primaries) == 1:
			writer = primaries[0]
		case len(primaries) > 1 && slices.Contains(primaries, p.writer):
			writer = p.writer
		case len(primaries) > 1 && slices.Contains(primaries, claimedWriter):
			writer = claimedWriter
		case len(primaries) == 0 && p.writer != "" && slices.Contains(cands, p.writer):
			if r, _ := res(p.writer); !r.reachable {
				// Lost, and nothing promoted yet: keep it, unhealthy, so
				// that its pool is kept should it come back.
				writer, writerWhy = p.writer, "unreachable"
			}
		}
		if len(primaries) > 1 {
			p.log.Warn("probe: more than one server is out of recovery", zap.Strings("servers", primaries), zap.String("writer", writer))
		}
	}
	if writer != "" {
		snap.Writer = &topology.Endpoint{Addr: writer, Role: topology.Writer, Healthy: writerWhy == "", Why: writerWhy, Source: "probe"}
		if writer == claimedWriter {
			snap.Writer.Source = claim.Writer.Source
		}
	}
	if writerWhy == "in recovery" {
		p.note(claimedWriter+" (writer)", "fenced: in recovery")
	}
	switch healthy := snap.Writer != nil && snap.Writer.Healthy; {
	case healthy && writer != p.writer:
		p.log.Info("probe: writer", zap.String("was", p.writer), zap.String("now", writer))
		p.writer = writer
	case !healthy && p.hadWriter:
		p.log.Warn("probe: no usable writer", zap.String("last", p.writer), zap.String("candidate", writer), zap.String("why", writerWhy))
	}
	p.hadWriter = snap.Writer != nil && snap.Writer.Healthy
	if snap.Writer != nil && snap.Writer.Healthy {
		if r, _ := res(writer); r.reachable {
			p.history = append(p.history, sample{now, r.lsn})
			if len(p.history) > historyLen {
				p.history = slices.Delete(p.history, 0, len(p.history)-historyLen)
			}
		}
	}

	// Replicas: those discovery claims, and (promotion by probe) every
	// other candidate that is a standby.
	claimed := map[string]topology.Endpoint{}
	if claim != nil {
		for _, e := range claim.Replicas {
			claimed[e.Addr] = e
		}
	}
	for i, addr := range cands {
		if addr == writer {
			continue
		}
		r := rs[i]
		ce, isClaimed := claimed[addr]
		switch {
		case isClaimed:
		case p.Promotion == ByProbe && r.reachable && r.inRecovery:
		case p.Promotion == ByProbe && !r.reachable && p.roles[addr] == topology.Replica && slices.Contains(p.Hosts, addr):
			// A host that was a replica and cannot be reached now: kept,
			// unhealthy, with its pools.
		default:
			continue
		}
		ep := topology.Endpoint{Addr: addr, Role: topology.Replica, Healthy: true, Source: "probe"}
		if isClaimed {
			ep.Source = ce.Source
		}
		switch {
		case isClaimed && !ce.Healthy:
			ep.Healthy, ep.Why = false, ce.Why
		case !r.reachable:
			ep.Healthy, ep.Why = false, "unreachable"
		case !r.inRecovery:
			ep.Healthy, ep.Why = false, "not in recovery"
		case p.lagging(r, now):
			ep.Healthy, ep.Why = false, "lagging"
		}
		snap.Replicas = append(snap.Replicas, ep)
	}
	for _, e := range snap.Replicas {
		p.roles[e.Addr] = topology.Replica
		p.note(e.Addr, e.Why)
	}
	if snap.Writer != nil {
		p.roles[writer] = topology.Writer
		p.note(writer+" (writer)", snap.Writer.Why)
	}
	return snap
}

// note logs an endpoint's health when it changes.
func (p *prober) note(who, why string) {
	if p.unwell[who] == why {
		return
	}
	if why == "" {
		p.log.Info("probe: endpoint healthy again", zap.String("endpoint", who), zap.String("was", p.unwell[who]))
		delete(p.unwell, who)
		return
	}
	p.log.Warn("probe: endpoint unhealthy", zap.String("endpoint", who), zap.String("why", why))
	p.unwell[who] = why
}

// lag measures how far a replica with result r is behind the writer: in
// bytes of WAL, and in seconds since the writer was first seen at a
// position the replica has not replayed (a lower bound with the probe
// interval as resolution). Without the writer's positions, seconds are
// those since the replica's last replayed transaction while it has more
// to replay, and bytes are -1.
func (p *prober) lag(r result, now time.Time) topology.Lag {
	l := topology.Lag{Bytes: -1, ReplayLSN: r.lsn, At: now}
	if n := len(p.history); n > 0 && p.history[n-1].at.Equal(now) {
		l.Bytes = max(int64(p.history[n-1].lsn)-int64(r.lsn), 0)
		for _, s := range p.history {
			if s.lsn > r.lsn {
				l.Seconds = now.Sub(s.at).Seconds()
				break
			}
		}
		return l
	}
	if r.behind {
		l.Seconds = r.sinceReplay
	}
	return l
}

// lagging reports whether a replica is past the lag limits.
func (p *prober) lagging(r result, now time.Time) bool {
	if p.MaxLag <= 0 && p.MaxLagBytes <= 0 {
		return false
	}
	l := p.lag(r, now)
	return p.MaxLag > 0 && l.Seconds > p.MaxLag.Seconds() || p.MaxLagBytes > 0 && l.Bytes > p.MaxLagBytes
}

// reportLags hands every reachable standby's lag to the sink.
func (p *prober) reportLags(sink topology.Sink, cands []string, rs []result, now time.Time) {
	for i, r := range rs {
		if r.reachable && r.inRecovery {
			sink.ReportLag(cands[i], p.lag(r, now))
		}
	}
}

// ParseLSN parses a WAL position in PostgreSQL's text form, X/Y in hex.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("invalid WAL position %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid WAL position %q", s)
	}
	return h<<32 | l, nil
}
