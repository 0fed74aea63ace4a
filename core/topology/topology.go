// Package topology is the seam between core and discovery: for each
// cluster, the current writer and replicas, replaced whenever a source
// reports a change. core reads it when it borrows (the route's role names
// the endpoint); discovery implementations (static probing, Consul) are
// Sources that core/proxy's wiring is handed, so core never imports them.
package topology

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
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
}

// Snapshot is a cluster's topology at one moment. It is never modified
// once published.
type Snapshot struct {
	// Writer is nil while no writer is known (during a failover): writer
	// borrows then wait for one.
	Writer   *Endpoint
	Replicas []Endpoint
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

// Source reports one cluster's topology: it calls publish with each new
// snapshot until ctx ends. publish never blocks.
type Source interface {
	Run(ctx context.Context, publish func(Snapshot))
}

// Cluster holds the latest snapshot of one cluster. It is safe for
// concurrent use; reading it costs an atomic load.
type Cluster struct {
	name    string
	cur     atomic.Pointer[Snapshot]
	mu      sync.Mutex
	changed chan struct{}
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
	close(c.changed)
	c.changed = make(chan struct{})
	return true
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
func (f Fixed) Run(ctx context.Context, publish func(Snapshot)) {
	publish(f.Snapshot())
	<-ctx.Done()
}
