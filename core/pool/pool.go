// Package pool owns Sluice's server connections: one Pool per (server
// endpoint, database, backend user). Borrowers wait first come, first served
// up to the borrow timeout; connections are opened on demand up to
// MaxConnections, kept idle up to MaxIdleConnections, and closed when they
// are broken, idle too long or older than their lifetime.
package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/wire"
)

// Settings are a pool's limits and timeouts. A Pool's settings may be
// replaced at any time with SetSettings (configuration reload).
type Settings struct {
	MaxConnections     int
	MaxIdleConnections int
	BorrowTimeout      time.Duration
	IdleTimeout        time.Duration // close connections idle longer; 0 keeps them
	Lifetime           time.Duration // close connections older; 0 keeps them
}

// healthCheckAfter is how long a connection must have been idle before
// Borrow checks its socket for a FATAL or end of file the server sent while
// it sat in the pool. Connections handed on within this time were in use
// a moment ago; skipping the system call for them keeps the hot path lean.
const healthCheckAfter = 5 * time.Millisecond

// ErrClosed is returned by Borrow on a closed pool.
var ErrClosed = errors.New("pool closed")

// ErrBorrowTimeout is wrapped by the error Borrow returns when no
// connection became free within the borrow timeout.
var ErrBorrowTimeout = errors.New("borrow timeout")

// DialFunc opens a new server connection for the pool.
type DialFunc func(ctx context.Context) (*Conn, error)

// Stats is a snapshot of a pool's counters.
type Stats struct {
	Open, Idle, Borrowed, Waiting        int
	Borrows, Timeouts, Dials, DialErrors uint64
}

// Pool holds the server connections of one endpoint, database and user.
// It is safe for concurrent use. The owner must call Close.
type Pool struct {
	name string
	dial DialFunc
	log  *zap.Logger
	obs  Observer // never nil

	mu       sync.Mutex
	settings Settings
	idle     []*Conn // most recently returned last
	open     int     // idle + borrowed + being dialled
	waiters  waitQueue
	// funcTimer fails callback waiters at their borrow timeout; it is
	// armed for funcArmed (zero: not armed).
	funcTimer *time.Timer
	funcArmed time.Time
	closed    bool
	fenced    bool
	suspect   time.Time // until then every idle connection is checked before it is lent
	lent      []*Conn   // borrowed connections, for Fence (Conn.lentAt)
	stats     Stats
	params    serverParams
}

// New returns an empty pool. name identifies the pool in client-facing
// errors and logs; it must not contain addresses or credentials.
func New(name string, dial DialFunc, s Settings, log *zap.Logger, opts ...Option) *Pool {
	p := &Pool{name: name, dial: dial, settings: s, log: log, obs: nopObserver{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// SetSettings replaces the pool's settings. A larger MaxConnections lets
// waiting borrowers dial at once; a smaller one closes connections as they
// come back until the pool fits.
func (p *Pool) SetSettings(s Settings) {
	p.mu.Lock()
	p.settings = s
	surplus := 0
	for len(p.idle) > 0 && p.open > s.MaxConnections {
		c := p.idle[0]
		p.idle = p.idle[1:]
		p.open--
		surplus++
		go c.Close()
	}
	p.grantLocked()
	p.mu.Unlock()
	for range surplus {
		p.obs.Closed(CloseSurplus)
	}
}

// Borrow returns a connection for the caller's exclusive use, opening one
// if the pool has room, else waiting up to the borrow timeout. The caller
// must hand it back with Return (or Discard when it is unusable). A timeout
// is reported as a *wire.Error with SQLSTATE 53300 naming the pool.
func (p *Pool) Borrow(ctx context.Context) (*Conn, error) {
	start := time.Now()
	c, err := p.borrow(ctx, start)
	if err != ErrClosed {
		p.obs.Waited(time.Since(start))
	}
	return c, err
}

// TryBorrow lends an idle connection without waiting, or returns nil when
// Borrow would dial or wait (no idle connection, borrowers in line, one
// due for a health check): for an event loop, whose slow path is Borrow
// on a goroutine. Among the idle connections it takes the most recently
// returned one whose Home's Owner is owner, else the most recent one.
//
// now is the caller's clock. A connection idle for a while is checked
// before it is lent, as Borrow does, when its Home is owner's (the check
// does not block on a detached socket); one elsewhere is left to Borrow.
func (p *Pool) TryBorrow(owner any, now time.Time) *Conn {
	start := now
	p.mu.Lock()
	n := len(p.idle)
	if p.closed || p.fenced || n == 0 || p.waiters.len > 0 || start.Before(p.suspect) {
		p.mu.Unlock()
		return nil
	}
	i := n - 1
	for j := n - 1; j >= 0 && j >= n-8; j-- { // a short look: the pool is a stack
		if h := p.idle[j].home; h != nil && h.Owner() == owner {
			i = j
			break
		}
	}
	c := p.idle[i]
	check := start.Sub(c.idleSince) > healthCheckAfter
	if p.expiredLocked(c, start) || c.Broken() || check && (c.home == nil || c.home.Owner() != owner) {
		p.mu.Unlock()
		return nil
	}
	p.idle = append(p.idle[:i], p.idle[i+1:]...)
	p.stats.Borrows++
	p.lendLocked(c)
	p.mu.Unlock()
	if check && !c.alive() {
		// The server ended it while it sat idle: it goes as Borrow's
		// check would close it, and the caller takes the slow path.
		p.mu.Lock()
		p.unlendLocked(c)
		p.open--
		p.grantLocked()
		p.mu.Unlock()
		c.Close()
		p.obs.Closed(CloseServerGone)
		return nil
	}
	p.obs.Waited(0)
	return c
}

// lendLocked records c as borrowed.
func (p *Pool) lendLocked(c *Conn) {
	p.lent = append(p.lent, c)
	c.lentAt = len(p.lent)
}

// unlendLocked forgets that c is borrowed.
func (p *Pool) unlendLocked(c *Conn) {
	if i := c.lentAt - 1; i >= 0 && i < len(p.lent) && p.lent[i] == c {
		last := len(p.lent) - 1
		p.lent[i] = p.lent[last]
		p.lent[i].lentAt = i + 1
		p.lent[last] = nil
		p.lent = p.lent[:last]
	}
	c.lentAt = 0
}

// BorrowFunc is Borrow for a caller that must never block (an event
// loop). It returns an idle connection at once when TryBorrow would. When
// every connection the pool may open is lent, it queues the caller behind
// the other borrowers and returns queued: fn is called once, later, with a
// connection or with what Borrow would have returned (53300 after the
// borrow timeout, ErrClosed, a dial's error), from the goroutine that
// returned a connection or from another one; fn must not block. It
// returns neither when Borrow is needed: the pool would dial, or check an
// idle connection first.
func (p *Pool) BorrowFunc(owner any, now time.Time, fn func(*Conn, error)) (c *Conn, queued bool) {
	if c := p.TryBorrow(owner, now); c != nil {
		return c, false
	}
	// The wait is timed from a fresh reading: now may be an event loop's
	// clock from before the request arrived, and a borrow_timeout counted
	// from it would end early as the client sees it.
	start := time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) > 0 || p.open < p.settings.MaxConnections && p.waiters.len == 0 {
		p.mu.Unlock()
		return nil, false
	}
	p.stats.Borrows++
	w := p.waiters.pushFunc(fn)
	w.start, w.timeout = start, p.settings.BorrowTimeout
	w.deadline = start.Add(w.timeout)
	p.armFuncTimerLocked(w.deadline)
	p.mu.Unlock()
	return nil, true
}

// armFuncTimerLocked makes the pool's one timer for callback waiters fire
// by deadline. One timer serves them all, since they time out in the order
// they came in (but after a reload that shortened borrow_timeout).
func (p *Pool) armFuncTimerLocked(deadline time.Time) {
	if !p.funcArmed.IsZero() && !deadline.Before(p.funcArmed) {
		return
	}
	p.funcArmed = deadline
	d := time.Until(deadline)
	if p.funcTimer == nil {
		p.funcTimer = time.AfterFunc(d, p.expireFuncWaiters)
		return
	}
	p.funcTimer.Reset(d)
}

// expireFuncWaiters fails the callback waiters whose borrow timeout
// passed with 53300, and sets the timer for the next one.
func (p *Pool) expireFuncWaiters() {
	now := time.Now()
	var expired []*waiter
	p.mu.Lock()
	p.funcArmed = time.Time{}
	var next time.Time
	for w := p.waiters.head; w != nil; {
		after := w.next
		switch {
		case w.fn == nil:
		case !now.Before(w.deadline):
			p.waiters.remove(w)
			p.stats.Timeouts++
			expired = append(expired, w)
		case next.IsZero() || w.deadline.Before(next):
			next = w.deadline
		}
		w = after
	}
	if !next.IsZero() {
		p.armFuncTimerLocked(next)
	}
	p.mu.Unlock()
	for _, w := range expired {
		p.obs.Waited(now.Sub(w.start))
		p.obs.TimedOut()
		w.fn(nil, wire.Errorf(wire.CodeTooManyConnections,
			"timed out after %s waiting for a server connection in pool %s", w.timeout, p.name).
			Wrap(ErrBorrowTimeout))
	}
}

// give hands g to w, a waiter just taken off the queue, outside p.mu.
func (p *Pool) give(w *waiter, g grant) {
	if w.fn == nil {
		w.ch <- g
		return
	}
	p.obs.Waited(time.Since(w.start))
	switch {
	case g.closed:
		w.fn(nil, ErrClosed)
	case g.conn != nil:
		w.fn(p.lend(g.conn))
	default:
		// A slot to dial in: not on the caller's goroutine.
		go func() { w.fn(p.dialConn(context.Background())) }()
	}
}

// giveLocked is give under p.mu: a channel send, or a callback on a
// goroutine of its own.
func (p *Pool) giveLocked(w *waiter, g grant) {
	if w.fn == nil {
		w.ch <- g
		return
	}
	go p.give(w, g)
}

// borrow is Borrow, which began at start.
func (p *Pool) borrow(ctx context.Context, start time.Time) (*Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.stats.Borrows++
	for now := start; len(p.idle) > 0; now = time.Now() {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		expired := p.expiredLocked(c, now)
		check := now.Sub(c.idleSince) > healthCheckAfter || now.Before(p.suspect)
		p.mu.Unlock()
		// The health check is a system call: keep it outside the lock.
		if !expired && (!check || c.alive()) {
			return p.lend(c)
		}
		c.Close()
		switch {
		case expired:
			p.obs.Closed(CloseLifetime)
		case c.Broken():
			p.obs.Closed(CloseBroken)
		default:
			p.obs.Closed(CloseServerGone)
		}
		p.mu.Lock()
		p.open--
		p.grantLocked()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
	}
	if p.open < p.settings.MaxConnections && p.waiters.len == 0 {
		p.open++
		p.mu.Unlock()
		return p.dialConn(ctx)
	}
	timeout := p.settings.BorrowTimeout
	w := p.waiters.push()
	p.mu.Unlock()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case g := <-w.ch:
		return p.take(ctx, g)
	case <-timer.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	if !p.waiters.remove(w) {
		// Granted while we gave up: take it and give it back properly.
		p.mu.Unlock()
		switch g := <-w.ch; {
		case g.conn != nil:
			p.Return(g.conn)
		case !g.closed:
			p.release()
		}
	} else {
		p.stats.Timeouts++
		p.mu.Unlock()
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	p.obs.TimedOut()
	return nil, wire.Errorf(wire.CodeTooManyConnections,
		"timed out after %s waiting for a server connection in pool %s", timeout, p.name).
		Wrap(ErrBorrowTimeout)
}

func (p *Pool) take(ctx context.Context, g grant) (*Conn, error) {
	switch {
	case g.closed:
		return nil, ErrClosed
	case g.conn != nil:
		return p.lend(g.conn)
	}
	return p.dialConn(ctx)
}

// lend records c as borrowed. A pool fenced meanwhile keeps nothing: the
// connection is closed and the borrower told the pool is closed.
func (p *Pool) lend(c *Conn) (*Conn, error) {
	p.mu.Lock()
	if p.fenced {
		p.open--
		p.mu.Unlock()
		c.Close()
		p.obs.Closed(CloseRetired)
		return nil, ErrClosed
	}
	p.lendLocked(c)
	p.mu.Unlock()
	return c, nil
}

// dialConn opens a connection in a slot already counted in p.open.
func (p *Pool) dialConn(ctx context.Context) (*Conn, error) {
	c, err := p.dial(ctx)
	p.mu.Lock()
	p.stats.Dials++
	if err != nil {
		p.stats.DialErrors++
		p.open--
		p.grantLocked()
		p.mu.Unlock()
		p.obs.DialFailed()
		return nil, err
	}
	c.pool = p
	p.noteDefaultsLocked(c)
	p.mu.Unlock()
	p.obs.Opened()
	return p.lend(c)
}

// Return hands a borrowed connection back. The connection must be idle (last
// ReadyForQuery status 'I', nothing in flight); a broken or expired one is
// closed instead. The next waiting borrower, if any, receives it directly.
func (p *Pool) Return(c *Conn) {
	p.mu.Lock()
	p.unlendLocked(c)
	now := time.Now()
	if why, unusable := p.unusableLocked(c, now); unusable {
		p.open--
		p.grantLocked()
		p.mu.Unlock()
		c.Close()
		p.obs.Closed(why)
		return
	}
	if w := p.waiters.pop(); w != nil {
		p.mu.Unlock()
		p.give(w, grant{conn: c})
		return
	}
	if len(p.idle) >= p.settings.MaxIdleConnections {
		p.open--
		p.mu.Unlock()
		c.Close()
		p.obs.Closed(CloseSurplus)
		return
	}
	c.idleSince = now
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// unusableLocked says why a connection coming back must be closed, if it
// must.
func (p *Pool) unusableLocked(c *Conn, now time.Time) (CloseReason, bool) {
	switch {
	case p.closed:
		return CloseRetired, true
	case c.Broken():
		return CloseBroken, true
	case p.expiredLocked(c, now):
		return CloseLifetime, true
	case p.open > p.settings.MaxConnections:
		return CloseSurplus, true
	}
	return 0, false
}

// Discard closes a borrowed connection that must not be reused and frees
// its slot.
func (p *Pool) Discard(c *Conn) {
	c.MarkBroken()
	p.Return(c)
}

// release frees a slot granted for dialling but not used.
func (p *Pool) release() {
	p.mu.Lock()
	p.open--
	p.grantLocked()
	p.mu.Unlock()
}

// grantLocked lets waiting borrowers dial while the pool has room.
func (p *Pool) grantLocked() {
	for p.waiters.len > 0 && p.open < p.settings.MaxConnections && !p.closed {
		w := p.waiters.pop()
		p.open++
		p.giveLocked(w, grant{})
	}
}

func (p *Pool) expiredLocked(c *Conn, now time.Time) bool {
	return p.settings.Lifetime > 0 && now.Sub(c.created) > p.settings.Lifetime
}

// Reap closes idle connections past the idle timeout or lifetime. The
// owner calls it periodically.
func (p *Pool) Reap(now time.Time) {
	p.mu.Lock()
	kept := p.idle[:0]
	var doomed []*Conn
	var why []CloseReason
	for _, c := range p.idle {
		switch {
		case p.expiredLocked(c, now):
			why = append(why, CloseLifetime)
		case p.settings.IdleTimeout > 0 && now.Sub(c.idleSince) > p.settings.IdleTimeout:
			why = append(why, CloseIdleTimeout)
		default:
			kept = append(kept, c)
			continue
		}
		doomed = append(doomed, c)
	}
	for i := len(kept); i < len(p.idle); i++ {
		p.idle[i] = nil
	}
	p.idle = kept
	p.open -= len(doomed)
	p.grantLocked()
	p.mu.Unlock()
	for i, c := range doomed {
		c.Close()
		p.obs.Closed(why[i])
	}
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open = p.open
	s.Idle = len(p.idle)
	s.Waiting = p.waiters.len
	s.Borrowed = p.open - s.Idle
	return s
}

// Close closes idle connections and makes later Borrow calls fail with
// ErrClosed, as do those waiting (their owner may try another pool);
// borrowed connections are closed as they come back. Close is idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	for w := p.waiters.pop(); w != nil; w = p.waiters.pop() {
		p.giveLocked(w, grant{closed: true})
	}
	if p.funcTimer != nil {
		p.funcTimer.Stop()
		p.funcArmed = time.Time{}
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
		p.obs.Closed(CloseRetired)
	}
}

// Suspect says one of the pool's connections failed under its borrower:
// for suspectWindow, every idle connection is checked before it is lent,
// however briefly it was idle, since a server that died took them all.
func (p *Pool) Suspect() {
	p.mu.Lock()
	p.suspect = time.Now().Add(suspectWindow)
	p.mu.Unlock()
}

// suspectWindow is how long Suspect makes Borrow check every connection.
const suspectWindow = time.Second

// Fence is Close that also cuts the borrowed connections at once: their
// sockets are closed under their borrowers, whose work on them fails. It
// is for a writer that must receive nothing more (demoted, or replaced by
// another), so that no transaction still open there can commit.
func (p *Pool) Fence() {
	p.mu.Lock()
	p.fenced = true
	lent := slices.Clone(p.lent)
	p.mu.Unlock()
	p.Close()
	for _, c := range lent {
		c.MarkBroken()
		c.breakSocket()
	}
}

func (p *Pool) String() string { return fmt.Sprintf("pool %s", p.name) }

// grant is what a waiting borrower receives: a connection, or (conn nil)
// a reserved slot to dial one.
// closed says the pool closed while the borrower waited.
type grant struct {
	conn   *Conn
	closed bool
}

type waiter struct {
	ch chan grant
	// fn, for BorrowFunc, takes the grant instead of ch; start is when
	// it began, deadline when its borrow timeout (the pool's funcTimer)
	// fails it.
	fn              func(*Conn, error)
	start, deadline time.Time
	timeout         time.Duration
	next, prev      *waiter
	queued          bool
}

// waitQueue is a FIFO of waiting borrowers with O(1) removal on timeout.
type waitQueue struct {
	head, tail *waiter
	len        int
}

func (q *waitQueue) push() *waiter {
	return q.add(&waiter{ch: make(chan grant, 1)})
}

// pushFunc queues a callback waiter (BorrowFunc), which needs no channel.
func (q *waitQueue) pushFunc(fn func(*Conn, error)) *waiter {
	return q.add(&waiter{fn: fn})
}

func (q *waitQueue) add(w *waiter) *waiter {
	w.queued, w.prev = true, q.tail
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.len++
	return w
}

func (q *waitQueue) pop() *waiter {
	w := q.head
	if w == nil {
		return nil
	}
	q.remove(w)
	return w
}

// remove unlinks w and reports whether it was still queued.
func (q *waitQueue) remove(w *waiter) bool {
	if !w.queued {
		return false
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.next, w.prev, w.queued = nil, nil, false
	q.len--
	return true
}
