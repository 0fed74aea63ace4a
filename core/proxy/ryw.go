package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/topology"
)

// Read-your-writes: a replica borrow whose route carries a WAL position
// (session.Route.MinLSN: the client's last commit with read_your_writes,
// or its SET sluice.min_lsn) goes only to a replica that has replayed up
// to it. Each replica's highest replay position seen is kept; when no
// replica is known to be past the position, the least busy one is asked,
// on the connection borrowed from it, every replayPoll until it is past
// it or read_your_writes_wait has gone by, and the borrow then goes to the
// writer, which has every commit.

// replayPoll is how often a connection waiting for its replica to replay
// a client's position asks again.
const replayPoll = 2 * time.Millisecond

// replayQuery reads a replica's replay position: NULL (an empty value)
// on a server not in recovery.
const replayQuery = "SELECT pg_catalog.pg_last_wal_replay_lsn()"

// replayGrace bounds a replay query beyond read_your_writes_wait, for a
// replica that stops answering.
const replayGrace = time.Second

// readYourWrites is what read-your-writes borrows share. Safe for
// concurrent use.
type readYourWrites struct {
	mu     sync.Mutex
	replay map[replicaKey]*atomic.Uint64 // highest replay position seen, by replica

	// fresh counts borrows served at once by a replica known to be past
	// their position; waits those that found none and polled one;
	// fallbacks those of them that went to the writer in the end.
	fresh, waits, fallbacks atomic.Uint64
}

type replicaKey struct{ cluster, addr string }

// ReadYourWritesStats counts the replica borrows that carried a WAL
// position since the proxy started.
type ReadYourWritesStats struct {
	// Fresh borrows went at once to a replica known to have replayed the
	// position.
	Fresh uint64
	// Waits found no such replica and polled one until it had, or until
	// read_your_writes_wait.
	Waits uint64
	// Fallbacks are the waits that went to the writer after all.
	Fallbacks uint64
}

// ReadYourWritesStats returns the proxy's read-your-writes counters.
func (p *Proxy) ReadYourWritesStats() ReadYourWritesStats {
	return ReadYourWritesStats{Fresh: p.ryw.fresh.Load(), Waits: p.ryw.waits.Load(), Fallbacks: p.ryw.fallbacks.Load()}
}

// replayOf returns the replay position cache of a replica.
func (r *readYourWrites) replayOf(cluster, addr string) *atomic.Uint64 {
	k := replicaKey{cluster, addr}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replay == nil {
		r.replay = make(map[replicaKey]*atomic.Uint64)
	}
	v, ok := r.replay[k]
	if !ok {
		v = new(atomic.Uint64)
		r.replay[k] = v
	}
	return v
}

// raise records that a replica has replayed up to l.
func raise(v *atomic.Uint64, l uint64) {
	for {
		old := v.Load()
		if l <= old || v.CompareAndSwap(old, l) {
			return
		}
	}
}

// borrowAfter lends a connection to a replica of the cluster that has
// replayed up to pos, or to the writer.
func (p *Proxy) borrowAfter(ctx context.Context, clusterName string, pos session.LSN, u *engine.User, database string) (*pool.Conn, error) {
	st := p.state.Load()
	cl, ok := st.cfg.Clusters[clusterName]
	tc := p.cluster(clusterName)
	var snap *topology.Snapshot
	if tc != nil {
		snap = tc.Current()
	}
	if !ok || snap == nil {
		return p.borrow(ctx, clusterName, session.RoleReplica, u, database) // its error, or its wait
	}
	type candidate struct {
		pl     *pool.Pool
		replay *atomic.Uint64
		load   int
	}
	var best, past *candidate
	var lags map[string]topology.Lag
	for pass := 0; pass < 2 && past == nil; pass++ {
		if pass == 1 {
			// The probes measure replay positions too.
			if lags = tc.Lags(); len(lags) == 0 {
				break
			}
		}
		best = nil
		for _, r := range snap.Replicas {
			if !r.Healthy {
				continue
			}
			pl, err := p.endpointPool(st, clusterName, r, u, database)
			if err != nil {
				return nil, err
			}
			c := &candidate{pl: pl, replay: p.ryw.replayOf(clusterName, r.Addr)}
			if l, ok := lags[r.Addr]; ok {
				raise(c.replay, l.ReplayLSN)
			}
			s := pl.Stats()
			c.load = s.Borrowed + s.Waiting
			if best == nil || c.load < best.load {
				best = c
			}
			if session.LSN(c.replay.Load()) >= pos && (past == nil || c.load < past.load) {
				past = c
			}
		}
	}
	if past != nil {
		if c, err := past.pl.Borrow(ctx); err == nil || !unreachable(err) {
			if err == nil {
				p.ryw.fresh.Add(1)
			}
			return c, err
		}
	}
	if best == nil {
		// No replica to wait for: the writer has every commit.
		return p.borrow(ctx, clusterName, roleWriterReadOnly, u, database)
	}
	p.ryw.waits.Add(1)
	wait := cl.ReadYourWritesWait
	if wait <= 0 {
		wait = config.DefaultReadYourWritesWait
	}
	start := time.Now()
	c, err := best.pl.Borrow(ctx)
	if err == nil {
		var caught bool
		if caught, err = awaitReplay(ctx, c, best.replay, pos, start.Add(wait)); caught {
			p.log.Debug("read-your-writes: waited for a replica", zap.String("cluster", clusterName),
				zap.Stringer("min_lsn", pos), zap.Duration("waited", time.Since(start)))
			return c, nil
		}
		if err != nil {
			best.pl.Discard(c)
		} else {
			best.pl.Return(c)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	p.ryw.fallbacks.Add(1)
	p.log.Debug("read-your-writes: no replica caught up; reading from the writer", zap.String("cluster", clusterName),
		zap.Stringer("min_lsn", pos), zap.Duration("waited", time.Since(start)), zap.Error(err))
	return p.borrow(ctx, clusterName, roleWriterReadOnly, u, database)
}

// awaitReplay asks the replica behind c for its replay position until it
// is past pos (caught) or deadline passes, recording what it sees in
// replay. An error means c is no longer usable.
func awaitReplay(ctx context.Context, c *pool.Conn, replay *atomic.Uint64, pos session.LSN, deadline time.Time) (caught bool, err error) {
	c.SetDeadline(deadline.Add(replayGrace))
	defer func() {
		if err == nil {
			err = c.SetDeadline(time.Time{})
		}
	}()
	var t *time.Timer
	for {
		row, err := c.QueryRow(replayQuery)
		if err != nil {
			return false, err
		}
		if l, ok := session.ParseLSN(row[0]); ok {
			raise(replay, uint64(l))
			if l >= pos {
				return true, nil
			}
		}
		pause := min(replayPoll, time.Until(deadline))
		if pause <= 0 {
			return false, nil
		}
		if t == nil {
			t = time.NewTimer(pause)
			defer t.Stop()
		} else {
			t.Reset(pause)
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-t.C:
		}
	}
}
