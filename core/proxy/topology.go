package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/topology"
	"github.com/sluicedb/sluice/core/wire"
)

// Option configures a Proxy at New.
type Option func(*Proxy)

// WithTopology makes src the source of the named cluster's topology in
// place of the writer and replicas its cluster block lists (discovery's
// probing and Consul sources are passed in this way).
func WithTopology(cluster string, src topology.Source) Option {
	return func(p *Proxy) {
		if p.topo.sources == nil {
			p.topo.sources = make(map[string]topology.Source)
		}
		p.topo.sources[cluster] = src
	}
}

// topologies holds each cluster's topology and the sources that feed it.
// Its maps are guarded by Proxy.mu.
type topologies struct {
	clusters map[string]*topology.Cluster
	sources  map[string]topology.Source // external sources, by cluster
	cancel   context.CancelFunc
}

// roleOf is a listener's default role.
func roleOf(l config.Listener) session.Role {
	if l.Role == config.RoleReader {
		return session.RoleReplica
	}
	return session.RoleWriter
}

// fixed is the topology a cluster block lists.
func fixed(cl config.Cluster) topology.Fixed {
	return topology.Fixed{Writer: cl.Writer, Replicas: cl.Replicas}
}

// startTopology creates the clusters' topologies: those without an external
// source get their block's addresses at once; external sources run until
// Close.
func (p *Proxy) startTopology(cfg *config.Config) {
	ctx, cancel := context.WithCancel(context.Background())
	p.topo.cancel = cancel
	p.topo.clusters = make(map[string]*topology.Cluster)
	for name, cl := range cfg.Clusters {
		tc := topology.NewCluster(name)
		p.topo.clusters[name] = tc
		src, external := p.topo.sources[name]
		if !external {
			tc.Publish(fixed(cl).Snapshot())
		}
		p.loops.Add(1)
		go p.followTopology(ctx, tc, src)
	}
}

// followTopology runs a cluster's external source, if any, and retires the
// pools of endpoints that leave its topology.
func (p *Proxy) followTopology(ctx context.Context, tc *topology.Cluster, src topology.Source) {
	defer p.loops.Done()
	if src != nil {
		p.loops.Add(1)
		go func() {
			defer p.loops.Done()
			src.Run(ctx, tc)
		}()
	}
	for {
		ch := tc.Changed()
		p.metrics.noteTopology(tc.Name(), tc.Current())
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		snap := tc.Current()
		p.log.Info("topology changed", zap.String("cluster", tc.Name()), zap.Stringer("topology", snapshotText{snap}))
		p.retirePools(tc.Name(), snap)
	}
}

// retirePools closes the pools of endpoints no longer in snap in the role
// they had: idle connections at once, borrowed ones when they come back.
// A writer that is no longer the writer (demoted, fenced, or replaced) is
// fenced: its borrowed connections are cut at once, so that a transaction
// still open there fails instead of committing on a node that is not the
// writer. Endpoints still listed but unhealthy keep their pools.
func (p *Proxy) retirePools(cluster string, snap *topology.Snapshot) {
	type member struct {
		addr string
		role topology.Role
	}
	keep := map[member]bool{}
	if snap.Writer != nil {
		keep[member{snap.Writer.Addr, topology.Writer}] = true
	}
	for _, r := range snap.Replicas {
		keep[member{r.Addr, topology.Replica}] = true
	}
	p.mu.Lock()
	var doomed, fenced []*pool.Pool
	for k, pl := range p.pools {
		if k.cluster == cluster && !keep[member{k.addr, k.role}] {
			if k.role == topology.Writer {
				fenced = append(fenced, pl)
			} else {
				doomed = append(doomed, pl)
			}
			delete(p.pools, k)
		}
	}
	p.mu.Unlock()
	for _, pl := range doomed {
		pl.Close()
	}
	for _, pl := range fenced {
		pl.Fence()
	}
}

// reloadTopology applies a reload's cluster blocks to the clusters that
// have no external source, and warns of discovery settings (old to cfg)
// that an external source only takes at the next start.
func (p *Proxy) reloadTopology(old, cfg *config.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, cl := range cfg.Clusters {
		if _, external := p.topo.sources[name]; external {
			if was, ok := old.Clusters[name]; ok && !sameDiscovery(was, cl) {
				p.log.Warn("reload: a cluster's discovery settings (writer, replicas, hosts, consul, monitor, promotion, lag limits) change only on restart; the running ones stay",
					zap.String("cluster", name))
			}
			continue
		}
		tc, ok := p.topo.clusters[name]
		if !ok {
			tc = topology.NewCluster(name)
			p.topo.clusters[name] = tc
			// A cluster added by a reload has no follower: its pools are
			// retired with the proxy.
		}
		tc.Publish(fixed(cl).Snapshot())
	}
}

// sameDiscovery reports whether two cluster blocks discover their servers
// the same way.
func sameDiscovery(a, b config.Cluster) bool {
	consulEq := (a.Consul == nil) == (b.Consul == nil) && (a.Consul == nil || a.Consul.Address == b.Consul.Address &&
		a.Consul.Service == b.Consul.Service && a.Consul.WriterTag == b.Consul.WriterTag &&
		a.Consul.ReplicaTag == b.Consul.ReplicaTag && a.Consul.Datacenter == b.Consul.Datacenter && a.Consul.Token == b.Consul.Token)
	return consulEq && a.Writer == b.Writer && slices.Equal(a.Replicas, b.Replicas) && slices.Equal(a.Hosts, b.Hosts) &&
		a.MonitorUser == b.MonitorUser && a.MonitorPassword == b.MonitorPassword &&
		a.HealthCheckInterval == b.HealthCheckInterval && a.PromotionMode() == b.PromotionMode() &&
		a.MaxReplicaLag == b.MaxReplicaLag && a.MaxReplicaLagBytes == b.MaxReplicaLagBytes
}

func (p *Proxy) stopTopology() {
	if p.topo.cancel != nil {
		p.topo.cancel()
	}
}

// cluster returns the named cluster's topology, or nil.
func (p *Proxy) cluster(name string) *topology.Cluster {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.topo.clusters[name]
}

// poolFor returns (creating on first use) the pool that a borrow for role
// in the named cluster goes to, for a backend user and database. A replica
// borrow goes to the healthy replica with the fewest borrowed and waiting
// connections, or (reader_fallback) to the writer or a wait for one. A
// writer borrow waits, up to borrow_timeout, while no writer is known.
func (p *Proxy) poolFor(ctx context.Context, clusterName string, role session.Role, u *engine.User, database string) (*pool.Pool, error) {
	st := p.state.Load()
	cl, ok := st.cfg.Clusters[clusterName]
	tc := p.cluster(clusterName)
	if !ok || tc == nil {
		return nil, wire.Fatalf(wire.CodeConnectionFailure, "cluster %q is not configured", clusterName)
	}
	var deadline <-chan time.Time
	for {
		ch := tc.Changed()
		snap := tc.Current()
		if snap != nil {
			if role == session.RoleReplica {
				if pl, err := p.replicaPool(st, clusterName, snap, u, database); pl != nil || err != nil {
					return pl, err
				}
			}
			if w := snap.UsableWriter(); w != nil && (role != session.RoleReplica || cl.ReaderFallback != config.FallbackWait) {
				// Reader transactions on the writer run read-only.
				return p.endpointPoolRO(st, clusterName, *w, role != session.RoleWriter, u, database)
			}
		}
		if deadline == nil {
			t := time.NewTimer(st.cfg.Pool.BorrowTimeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			p.metrics.noServer(clusterName, role, database, u.BackendUser)
			what := "writer"
			if role == session.RoleReplica {
				what = "usable replica"
			}
			return nil, wire.Errorf(wire.CodeCannotConnectNow, "no %s is known for cluster %q (waited %s)", what, clusterName, st.cfg.Pool.BorrowTimeout)
		}
	}
}

// memoPool is poolFor without waiting, for a loop session's borrow: while
// the configuration and the cluster's topology are those memo saw, a
// writer route goes to the pool it went to last, without the lookups
// (replica routes are balanced at every borrow). nil: no pool now.
func (p *Proxy) memoPool(memo *engine.PoolMemo, r session.Route, u *engine.User, database string) *pool.Pool {
	st := p.state.Load()
	r.MinLSN = 0 // only a replica borrow heeds it
	if r.Role != session.RoleReplica && memo.Pool != nil && memo.Route == r {
		if tc, _ := memo.Stamp[0].(*topology.Cluster); tc != nil && memo.Stamp[1] == any(tc.Current()) && memo.Stamp[2] == any(st) {
			return memo.Pool
		}
	}
	tc := p.cluster(r.Cluster)
	var snap *topology.Snapshot
	if tc != nil {
		snap = tc.Current()
	}
	pl, err := p.poolFor(p.noWait, r.Cluster, r.Role, u, database)
	if err != nil || pl == nil {
		*memo = engine.PoolMemo{}
		return nil
	}
	if r.Role != session.RoleReplica && tc != nil {
		*memo = engine.PoolMemo{Route: r, Pool: pl, Stamp: [3]any{tc, snap, st}}
	}
	return pl
}

// borrow lends a connection of the pool poolFor chooses. When the
// endpoint cannot be reached or refuses connections as it shuts down or
// starts (a failover under way), it waits for the topology to change, or
// tries again shortly, up to borrow_timeout, instead of failing the client.
func (p *Proxy) borrow(ctx context.Context, clusterName string, role session.Role, u *engine.User, database string) (*pool.Conn, error) {
	st := p.state.Load()
	deadline := time.Now().Add(st.cfg.Pool.BorrowTimeout)
	for {
		tc := p.cluster(clusterName)
		var seen *topology.Snapshot
		var ch <-chan struct{}
		if tc != nil {
			ch, seen = tc.Changed(), tc.Current()
		}
		pl, err := p.poolFor(ctx, clusterName, role, u, database)
		if err != nil {
			return nil, err
		}
		c, err := pl.Borrow(ctx)
		p.metrics.noteBorrow(clusterName, role, err)
		if err == nil || !unreachable(err) || ctx.Err() != nil || !time.Now().Before(deadline) {
			return c, err
		}
		if tc != nil {
			tc.Suspect() // the prober looks again at once
			if tc.Current() != seen {
				continue
			}
		}
		retry := time.NewTimer(min(retryPause, time.Until(deadline)))
		select {
		case <-ch:
		case <-retry.C:
		case <-ctx.Done():
		}
		retry.Stop()
	}
}

// retryPause is how long a borrow waits before trying an unreachable
// endpoint again when the topology has not changed.
const retryPause = 100 * time.Millisecond

// roleWriterReadOnly is a route, inside core/proxy only, to the writer's
// read-only pool: where a reader transaction goes when no replica serves
// it (read-your-writes' fallback).
const roleWriterReadOnly session.Role = 255

// unreachable reports a borrow that failed because the server could not
// be reached or is shutting down or starting up.
func unreachable(err error) bool {
	if errors.Is(err, pool.ErrConnect) || errors.Is(err, pool.ErrClosed) {
		// ErrClosed: the pool was retired under the borrower (its
		// endpoint left the topology); the next one is chosen afresh.
		return true
	}
	var we *wire.Error
	return errors.As(err, &we) && (we.Code == wire.CodeCannotConnectNow || we.Code == wire.CodeAdminShutdown)
}

// replicaPool returns the pool of the least busy healthy replica, or nil
// when there is none.
func (p *Proxy) replicaPool(st *state, cluster string, snap *topology.Snapshot, u *engine.User, database string) (*pool.Pool, error) {
	var best *pool.Pool
	bestLoad := 0
	for _, r := range snap.Replicas {
		if !r.Healthy {
			continue
		}
		pl, err := p.endpointPool(st, cluster, r, u, database)
		if err != nil {
			return nil, err
		}
		s := pl.Stats()
		if load := s.Borrowed + s.Waiting; best == nil || load < bestLoad {
			best, bestLoad = pl, load
		}
	}
	return best, nil
}

// endpointPool returns (creating on first use) the pool of one endpoint.
func (p *Proxy) endpointPool(st *state, clusterName string, e topology.Endpoint, u *engine.User, database string) (*pool.Pool, error) {
	return p.endpointPoolRO(st, clusterName, e, false, u, database)
}

// endpointPoolRO is endpointPool; with readOnly, the pool's sessions
// start read-only (the writer's pool for reader transactions that fall
// back to it: a write there fails with 25006, as on a replica).
func (p *Proxy) endpointPoolRO(st *state, clusterName string, e topology.Endpoint, readOnly bool, u *engine.User, database string) (*pool.Pool, error) {
	key := poolKey{cluster: clusterName, addr: e.Addr, role: e.Role, readOnly: readOnly, database: database, user: u.BackendUser}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, wire.Fatalf(wire.CodeAdminShutdown, "terminating connection due to administrator command")
	}
	if pl, ok := p.pools[key]; ok {
		return pl, nil
	}
	ep := pool.Endpoint{
		Addr: e.Addr, Name: endpointName(clusterName, e.Role),
		Database: database, User: u.BackendUser, Password: u.BackendPassword,
		InitQuery: st.cfg.Pool.InitQuery, ConnectTimeout: st.cfg.Pool.ConnectTimeout,
		TLS: st.servers[clusterName], ReadOnly: readOnly,
	}
	name := fmt.Sprintf("%q %s %s (user %q, database %q)", clusterName, e.Role, e.Addr, u.BackendUser, database)
	if readOnly {
		name = fmt.Sprintf("%q %s %s read-only (user %q, database %q)", clusterName, e.Role, e.Addr, u.BackendUser, database)
	}
	dial := func(ctx context.Context) (*pool.Conn, error) {
		// A reload's cluster TLS settings apply to the next connection.
		ep := ep
		if t, ok := p.state.Load().servers[clusterName]; ok {
			ep.TLS = t
		}
		return pool.Connect(ctx, ep)
	}
	settingsRole := e.Role
	if readOnly {
		settingsRole = topology.Replica // it serves reader traffic
	}
	pl := pool.New(name, dial, poolSettings(st.cfg, settingsRole), p.log.With(zap.String("pool", name)),
		pool.WithObserver(p.metrics.poolObserver(clusterName, e.Role, database, u.BackendUser)))
	p.pools[key] = pl
	return pl, nil
}

// endpointName is how errors name an endpoint to clients, who are not
// told server addresses.
func endpointName(cluster string, r topology.Role) string {
	if r == topology.Replica {
		return fmt.Sprintf("a replica of cluster %q", cluster)
	}
	return fmt.Sprintf("cluster %q", cluster)
}

// snapshotText prints a snapshot in logs.
type snapshotText struct{ s *topology.Snapshot }

func (t snapshotText) String() string {
	if t.s == nil {
		return "none"
	}
	w := "none"
	if t.s.Writer != nil {
		w = t.s.Writer.Addr
	}
	out := "writer " + w + ", replicas ["
	for i, r := range t.s.Replicas {
		if i > 0 {
			out += " "
		}
		out += r.Addr
		if !r.Healthy {
			out += "(unhealthy)"
		}
	}
	return out + "]"
}
