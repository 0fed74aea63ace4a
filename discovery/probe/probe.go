// Package probe is a topology source that asks the servers themselves:
// every interval it connects (once, then keeps the connection) to each
// host with the monitor credentials and runs
// pg_catalog.pg_is_in_recovery(). The one reachable host not in recovery
// is the writer, as libpq's target_session_attrs=read-write finds it;
// reachable hosts in recovery are replicas; unreachable hosts are left out,
// so their pools are retired. Two hosts out of recovery at once (a
// split brain during a failover) never make two writers: the writer
// already known stays, and if it is not one of them there is none until
// only one remains.
package probe

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/topology"
)

// DefaultInterval is health_check_interval's default.
const DefaultInterval = time.Second

// Source probes a fixed list of hosts.
type Source struct {
	// Hosts are the candidates' host:port.
	Hosts []string
	// Endpoint is the template of a probe connection: database, monitor
	// user and password, TLS and connect timeout (Addr is each host).
	Endpoint pool.Endpoint
	// Interval is the time between probes; zero is DefaultInterval.
	Interval time.Duration
	Log      *zap.Logger
}

// Run implements topology.Source.
func (s *Source) Run(ctx context.Context, sink topology.Sink) {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	conns := make([]*pool.Conn, len(s.Hosts))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	writer := ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		results := s.probeAll(ctx, conns, interval)
		snap, w := decide(s.Hosts, results, writer)
		if w != writer {
			log.Info("probe: writer", zap.String("was", writer), zap.String("now", w))
			writer = w
		}
		sink.Publish(snap)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// result is what one probe found.
type result struct {
	reachable, inRecovery bool
}

// probeAll probes every host at once, each within the interval.
func (s *Source) probeAll(ctx context.Context, conns []*pool.Conn, interval time.Duration) []result {
	out := make([]result, len(s.Hosts))
	var wg sync.WaitGroup
	for i, h := range s.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], conns[i] = s.probe(ctx, h, conns[i], interval)
		}()
	}
	wg.Wait()
	return out
}

// probe asks one host, opening a connection when it has none; a failed
// probe closes it.
func (s *Source) probe(ctx context.Context, host string, c *pool.Conn, limit time.Duration) (result, *pool.Conn) {
	if c == nil {
		ep := s.Endpoint
		ep.Addr = host
		if ep.ConnectTimeout <= 0 || ep.ConnectTimeout > limit {
			ep.ConnectTimeout = limit
		}
		var err error
		if c, err = pool.Connect(ctx, ep); err != nil {
			return result{}, nil
		}
	}
	c.SetDeadline(time.Now().Add(limit))
	row, err := c.QueryRow("SELECT pg_catalog.pg_is_in_recovery()")
	if err != nil || len(row) != 1 {
		c.Close()
		return result{}, nil
	}
	c.SetDeadline(time.Time{})
	return result{reachable: true, inRecovery: row[0] == "t"}, c
}

// decide makes a snapshot of what the probes found, given the writer
// known so far, and returns the writer it chose ("" for none).
func decide(hosts []string, rs []result, known string) (topology.Snapshot, string) {
	var snap topology.Snapshot
	var primaries []string
	for i, r := range rs {
		switch {
		case !r.reachable:
		case r.inRecovery:
			snap.Replicas = append(snap.Replicas, topology.Endpoint{Addr: hosts[i], Role: topology.Replica, Healthy: true, Source: "probe"})
		default:
			primaries = append(primaries, hosts[i])
		}
	}
	writer := ""
	switch {
	case len(primaries) == 1:
		writer = primaries[0]
	case len(primaries) > 1:
		for _, p := range primaries {
			if p == known {
				writer = p
			}
		}
	}
	if writer != "" {
		snap.Writer = &topology.Endpoint{Addr: writer, Role: topology.Writer, Healthy: true, Source: "probe"}
	}
	return snap, writer
}
