package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/topology"
)

// stateCollector reads, at scrape time, what the proxy already keeps:
// its pools' Stats, its sessions' Info, its pin counts and its clusters'
// topology, lags and source statuses. It costs the hot path nothing.
type stateCollector struct {
	p *Proxy

	serverConns, borrowWaiting        *prometheus.Desc
	pinnedSessions, sessionPins       *prometheus.Desc
	topologyChanges, writerKnown      *prometheus.Desc
	replicas, replicasBanned          *prometheus.Desc
	lagBytes, lagSeconds              *prometheus.Desc
	discoveryStaleness, discoveryFail *prometheus.Desc
}

var _ prometheus.Collector = (*stateCollector)(nil)

func newStateCollector(p *Proxy) *stateCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_"+name, help, labels, nil)
	}
	return &stateCollector{
		p: p,
		serverConns: desc("server_connections",
			"Server connections open now, by state: idle (in the pool), in_transaction (lent to a client inside a transaction block), pinned (lent to a pinned client outside a transaction), borrowed (lent otherwise: a request in flight, a login, a session-mode client, or being dialled).",
			with(poolLabels, "state")...),
		borrowWaiting: desc("borrow_waiting", "Borrowers waiting now for a server connection of a full pool.", poolLabels...),
		pinnedSessions: desc("pinned_sessions",
			"Client sessions pinned to their server connection now, by reason (a session pinned for two reasons counts under both).", "reason"),
		sessionPins: desc("session_pins_total",
			"Sessions pinned, by reason, since the proxy started (each session counts once per reason).", "reason"),
		topologyChanges: desc("topology_changes_total", "Topology snapshots that changed a cluster's writer or replicas.", "cluster"),
		writerKnown:     desc("writer_known", "1 while the cluster has a known, healthy writer (one writes can go to), else 0.", "cluster"),
		replicas:        desc("replicas", "Replicas in the cluster's topology now, healthy or not.", "cluster"),
		replicasBanned: desc("replicas_banned",
			"Replicas in the topology that are not used now, by why (unreachable, lagging, critical...).", "cluster", "why"),
		lagBytes:   desc("replica_lag_bytes", "WAL bytes the writer has written that the replica has not replayed, as its source last measured (absent while unknown).", "cluster", "replica"),
		lagSeconds: desc("replica_lag_seconds", "Seconds since the replica last replayed a transaction while it had more to replay, as its source last measured.", "cluster", "replica"),
		discoveryStaleness: desc("discovery_staleness_seconds",
			"Seconds since the topology source last answered (absent before its first answer).", "cluster", "source"),
		discoveryFail: desc("discovery_error", "1 while the topology source's last attempt failed, else 0.", "cluster", "source"),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.serverConns, c.borrowWaiting, c.pinnedSessions, c.sessionPins,
		c.topologyChanges, c.writerKnown, c.replicas, c.replicasBanned, c.lagBytes, c.lagSeconds,
		c.discoveryStaleness, c.discoveryFail} {
		ch <- d
	}
}

// poolState adds up the server connections of the pools that share one
// set of labels.
type poolState struct {
	idle, borrowed, waiting, inTx, pinned int
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	p.mu.Lock()
	pools := make(map[*pool.Pool][4]string, len(p.pools))
	for k, pl := range p.pools {
		pools[pl] = [4]string{k.cluster, k.role.String(), k.database, k.user}
	}
	sessions := make([]*engine.Session, 0, len(p.sessions))
	for _, s := range p.sessions {
		sessions = append(sessions, s)
	}
	clusters := make(map[string]*topology.Cluster, len(p.topo.clusters))
	for name, tc := range p.topo.clusters {
		clusters[name] = tc
	}
	p.mu.Unlock()

	states := make(map[[4]string]*poolState)
	for pl, l := range pools {
		st := pl.Stats()
		ps := states[l]
		if ps == nil {
			ps = &poolState{}
			states[l] = ps
		}
		ps.idle += st.Idle
		ps.borrowed += st.Borrowed
		ps.waiting += st.Waiting
	}
	pinned := make(map[string]int)
	for _, s := range sessions {
		in := s.Info()
		for _, r := range in.Pinned {
			pinned[r]++
		}
		l, ok := pools[in.Server]
		if !ok {
			continue // holds nothing, or a connection of a retired pool
		}
		switch {
		case in.InTransaction:
			states[l].inTx++
		case len(in.Pinned) > 0:
			states[l].pinned++
		}
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for l, ps := range states {
		// The pool's and the sessions' views are taken moments apart.
		other := max(ps.borrowed-ps.inTx-ps.pinned, 0)
		gauge(c.serverConns, ps.idle, l[0], l[1], l[2], l[3], "idle")
		gauge(c.serverConns, ps.inTx, l[0], l[1], l[2], l[3], "in_transaction")
		gauge(c.serverConns, ps.pinned, l[0], l[1], l[2], l[3], "pinned")
		gauge(c.serverConns, other, l[0], l[1], l[2], l[3], "borrowed")
		gauge(c.borrowWaiting, ps.waiting, l[:]...)
	}
	for r, n := range pinned {
		gauge(c.pinnedSessions, n, r)
	}
	for r, n := range p.PinCounts() {
		ch <- prometheus.MustNewConstMetric(c.sessionPins, prometheus.CounterValue, float64(n), r)
	}
	now := time.Now()
	for name, tc := range clusters {
		c.collectCluster(ch, name, tc, now)
	}
}

// collectCluster reports one cluster's topology, lags and sources.
func (c *stateCollector) collectCluster(ch chan<- prometheus.Metric, name string, tc *topology.Cluster, now time.Time) {
	value := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	value(c.topologyChanges, prometheus.CounterValue, float64(tc.Changes()), name)
	snap := tc.Current()
	known := 0.0
	var replicas []topology.Endpoint
	if snap != nil {
		if snap.UsableWriter() != nil {
			known = 1
		}
		replicas = snap.Replicas
	}
	value(c.writerKnown, prometheus.GaugeValue, known, name)
	value(c.replicas, prometheus.GaugeValue, float64(len(replicas)), name)
	banned := make(map[string]int)
	for _, r := range replicas {
		if !r.Healthy {
			why := r.Why
			if why == "" {
				why = "unknown"
			}
			banned[why]++
		}
	}
	for why, n := range banned {
		value(c.replicasBanned, prometheus.GaugeValue, float64(n), name, why)
	}
	lags := tc.Lags()
	seen := make(map[string]bool, len(replicas))
	for _, r := range replicas {
		l, ok := lags[r.Addr]
		if !ok || seen[r.Addr] {
			continue // measured by no one (lags of replicas that left are not shown)
		}
		seen[r.Addr] = true
		if l.Bytes >= 0 {
			value(c.lagBytes, prometheus.GaugeValue, float64(l.Bytes), name, r.Addr)
		}
		value(c.lagSeconds, prometheus.GaugeValue, l.Seconds, name, r.Addr)
	}
	for _, st := range tc.Statuses() {
		if !st.LastOK.IsZero() {
			value(c.discoveryStaleness, prometheus.GaugeValue, now.Sub(st.LastOK).Seconds(), name, st.Source)
		}
		failing := 0.0
		if st.Err != "" {
			failing = 1
		}
		value(c.discoveryFail, prometheus.GaugeValue, failing, name, st.Source)
	}
}
