// Package topology is the seam between core and discovery: for each
// cluster, the current writer and replicas, replaced whenever a source
// reports a change. core reads it when it borrows (the route's role names
// the endpoint); discovery implementations (static probing, Consul) are
// Sources that core/proxy's wiring is handed, so core never imports them.
package topology

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Role is what an endpoint serves.
type Role uint8

// The endpoint roles.
const (
	Writer Role = iota
	Replica
)

func (r Role) String() string {
	if r == Replica {
		return "replica"
	}
	return "writer"
}

// Endpoint is one PostgreSQL server of a cluster.
type Endpoint struct {
	Addr string // host:port
	Role Role
	// Healthy is the source's view: a passing Consul check, a reachable
	// probe, or true for a fixed address.
	Healthy bool
	// Source says who reported the role: "static", "consul", "probe".
	Source string
	// Why says why an endpoint is not Healthy: "unreachable", "lagging",
	// "in recovery" (a writer fenced), "critical" (its Consul check).
	Why string
}

// Snapshot is a cluster's topology at one moment. It is never modified
// once published.
type Snapshot struct {
	// Writer is nil while no writer is known (during a failover): writer
	// borrows then wait for one.
	Writer   *Endpoint
	Replicas []Endpoint
}

// UsableWriter returns the writer if it is healthy: the one writes may go
// to. A writer listed unhealthy (unreachable for now) keeps its pools but
// takes no borrows.
func (s *Snapshot) UsableWriter() *Endpoint {
	if s == nil || s.Writer == nil || !s.Writer.Healthy {
		return nil
	}
	return s.Writer
}

// Equal reports whether two snapshots name the same endpoints.
func (s *Snapshot) Equal(o *Snapshot) bool {
	if s == nil || o == nil {
		return s == o
	}
	if (s.Writer == nil) != (o.Writer == nil) || s.Writer != nil && *s.Writer != *o.Writer {
		return false
	}
	return slices.Equal(s.Replicas, o.Replicas)
}

// Source reports one cluster's topology to sink until ctx ends: each new
// snapshot, and what it measures beside them. Sink methods never block.
type Source interface {
	Run(ctx context.Context, sink Sink)
}

// Sink receives what a Source reports. *Cluster is one.
type Sink interface {
	// Publish replaces the snapshot and reports whether it changed.
	Publish(Snapshot) bool
	// ReportLag records a replica's replay lag as a probe measured it.
	ReportLag(addr string, l Lag)
	// ReportStatus records the health of the source itself.
	ReportStatus(Status)
	// Suspicions returns a channel closed when core next suspects the
	// topology is stale (it could not reach an endpoint): a source that
	// polls should look again at once.
	Suspicions() <-chan struct{}
}

// Lag is how far a replica is behind its writer.
type Lag struct {
	// Bytes of WAL the writer has written that the replica has not
	// replayed; -1 when the writer's position is unknown.
	Bytes int64
	// Seconds since the replica last replayed a transaction while it
	// had more to replay (zero when it is caught up).
	Seconds float64
	// ReplayLSN is the replica's last replayed WAL position.
	ReplayLSN uint64
	// At is when it was measured.
	At time.Time
}

// Status is a source's own health: Consul unreachable, for instance,
// while the last topology it gave keeps serving.
type Status struct {
	// Source names the source: "static", "consul", "probe".
	Source string
	// LastOK is when the source last answered.
	LastOK time.Time
	// Err is its last failure, empty when its last attempt succeeded.
	Err string
}

// Cluster holds the latest snapshot of one cluster. It is safe for
// concurrent use; reading it costs an atomic load.
type Cluster struct {
	name    string
	cur     atomic.Pointer[Snapshot]
	mu      sync.Mutex
	changed chan struct{}
	suspect chan struct{}     // closed by Suspect
	changes int               // snapshots published that changed something
	lags    map[string]Lag    // by replica address
	status  map[string]Status // by source name
}

// NewCluster returns a cluster with no snapshot yet.
func NewCluster(name string) *Cluster {
	return &Cluster{name: name, changed: make(chan struct{})}
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Current returns the latest snapshot, or nil before the first.
func (c *Cluster) Current() *Snapshot { return c.cur.Load() }

// Publish replaces the snapshot and wakes those waiting on Changed. It
// reports whether anything changed.
func (c *Cluster) Publish(s Snapshot) bool {
	s.Replicas = slices.Clone(s.Replicas)
	if s.Writer != nil {
		w := *s.Writer
		s.Writer = &w
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur.Load().Equal(&s) {
		return false
	}
	c.cur.Store(&s)
	c.changes++
	close(c.changed)
	c.changed = make(chan struct{})
	return true
}

// Suspect says an endpoint of the cluster could not be reached: sources
// waiting on Suspicions look again.
func (c *Cluster) Suspect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.suspect != nil {
		close(c.suspect)
		c.suspect = nil
	}
}

// Suspicions implements Sink.
func (c *Cluster) Suspicions() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.suspect == nil {
		c.suspect = make(chan struct{})
	}
	return c.suspect
}

// Changes returns how many published snapshots changed the topology.
func (c *Cluster) Changes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes
}

// ReportLag implements Sink.
func (c *Cluster) ReportLag(addr string, l Lag) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lags == nil {
		c.lags = make(map[string]Lag)
	}
	c.lags[addr] = l
}

// Lags returns the last lag measured for each replica, by address.
func (c *Cluster) Lags() map[string]Lag {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.lags)
}

// ReportStatus implements Sink.
func (c *Cluster) ReportStatus(s Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status == nil {
		c.status = make(map[string]Status)
	}
	c.status[s.Source] = s
}

// Statuses returns the last status of each source that reported one.
func (c *Cluster) Statuses() []Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.SortedFunc(maps.Values(c.status), func(a, b Status) int {
		return strings.Compare(a.Source, b.Source)
	})
}

// Changed returns a channel closed at the next change.
func (c *Cluster) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Fixed is a Source of addresses that do not change: a writer (may be
// empty) and replicas, all taken as healthy.
type Fixed struct {
	Writer   string
	Replicas []string
}

// Snapshot returns what Fixed publishes.
func (f Fixed) Snapshot() Snapshot {
	var s Snapshot
	if f.Writer != "" {
		s.Writer = &Endpoint{Addr: f.Writer, Role: Writer, Healthy: true, Source: "static"}
	}
	for _, r := range f.Replicas {
		s.Replicas = append(s.Replicas, Endpoint{Addr: r, Role: Replica, Healthy: true, Source: "static"})
	}
	return s
}

// Run implements Source.
func (f Fixed) Run(ctx context.Context, sink Sink) {
	sink.Publish(f.Snapshot())
	sink.ReportStatus(Status{Source: "static", LastOK: time.Now()})
	<-ctx.Done()
}
