package pool

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu                           sync.Mutex
	opened, dialFailed, timeouts int
	waits                        []time.Duration
	closed                       map[CloseReason]int
}

func (r *recorder) Opened()     { r.mu.Lock(); r.opened++; r.mu.Unlock() }
func (r *recorder) DialFailed() { r.mu.Lock(); r.dialFailed++; r.mu.Unlock() }
func (r *recorder) TimedOut()   { r.mu.Lock(); r.timeouts++; r.mu.Unlock() }
func (r *recorder) Closed(why CloseReason) {
	r.mu.Lock()
	r.closed[why]++
	r.mu.Unlock()
}
func (r *recorder) Waited(d time.Duration) {
	r.mu.Lock()
	r.waits = append(r.waits, d)
	r.mu.Unlock()
}
func (r *recorder) Served(time.Duration, bool) {}

// The pool tells its Observer about every connection it opens and closes,
// with the reason, and about every borrow and timeout.
func TestObserverSeesOpensClosesAndWaits(t *testing.T) {
	rec := &recorder{closed: map[CloseReason]int{}}
	d := &pipeDialer{}
	s := Settings{MaxConnections: 2, MaxIdleConnections: 1, BorrowTimeout: 50 * time.Millisecond, Lifetime: time.Hour, IdleTimeout: time.Minute}
	p := New("test", d.dial, s, zap.NewNop(), WithObserver(rec))
	if p.Observer() != Observer(rec) {
		t.Fatal("Observer() is not the one given WithObserver")
	}
	ctx := context.Background()
	borrow := func() *Conn {
		t.Helper()
		c, err := p.Borrow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	c := borrow()
	c.MarkBroken()
	p.Return(c) // broken
	c = borrow()
	c.created = time.Now().Add(-2 * time.Hour)
	p.Return(c) // lifetime
	a, b := borrow(), borrow()
	if _, err := p.Borrow(ctx); err == nil {
		t.Fatal("a third borrow of a pool of two succeeded")
	}
	p.Return(a)
	p.Return(b)                             // surplus: one idle at most
	p.Reap(time.Now().Add(2 * time.Minute)) // idle_timeout
	c = borrow()
	p.Return(c)
	d.fail.Store(true)
	c, _ = p.Borrow(ctx) // the idle one
	if _, err := p.Borrow(ctx); err == nil {
		t.Fatal("a borrow with a failing dialer succeeded")
	}
	p.Return(c)
	p.Close() // retired

	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := map[CloseReason]int{CloseBroken: 1, CloseLifetime: 1, CloseSurplus: 1, CloseIdleTimeout: 1, CloseRetired: 1}
	for _, why := range CloseReasons() {
		if rec.closed[why] != want[why] {
			t.Errorf("closed for %s: %d, want %d", why, rec.closed[why], want[why])
		}
	}
	if rec.opened != 5 || rec.dialFailed != 1 || rec.timeouts != 1 {
		t.Errorf("opened %d, dial failures %d, timeouts %d; want 5, 1, 1", rec.opened, rec.dialFailed, rec.timeouts)
	}
	if len(rec.waits) != 8 {
		t.Errorf("%d borrows observed, want 8", len(rec.waits))
	}
	longest := time.Duration(0)
	for _, w := range rec.waits {
		longest = max(longest, w)
	}
	if longest < s.BorrowTimeout {
		t.Errorf("the longest wait observed is %s, want at least the borrow timeout %s", longest, s.BorrowTimeout)
	}
}
