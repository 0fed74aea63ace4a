package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/wire"
)

// result is what a BorrowFunc callback received.
type result struct {
	c   *Conn
	err error
}

func callback() (func(*Conn, error), chan result) {
	ch := make(chan result, 1)
	return func(c *Conn, err error) { ch <- result{c, err} }, ch
}

// BorrowFunc lends an idle connection at once, asks for Borrow when the
// pool would dial, and queues in line with Borrow's waiters when the pool
// is at its limit: the callback gets the connection a Return hands over,
// in arrival order.
func TestBorrowFuncQueuesInLine(t *testing.T) {
	p, _ := newTestPool(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 5 * time.Second})
	defer p.Close()
	ctx := context.Background()
	fn, got := callback()
	if c, queued := p.BorrowFunc(nil, time.Now(), fn); c != nil || queued {
		t.Fatalf("empty pool with room: %v, %v; want Borrow asked for (it dials)", c, queued)
	}
	held, err := p.Borrow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan *Conn, 1)
	go func() { // a Borrow waiter, ahead of the callback
		c, err := p.Borrow(ctx)
		if err != nil {
			t.Error(err)
		}
		first <- c
	}()
	for p.Stats().Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	if c, queued := p.BorrowFunc(nil, time.Now(), fn); c != nil || !queued {
		t.Fatalf("pool at its limit: %v, %v; want queued", c, queued)
	}
	if s := p.Stats(); s.Waiting != 2 {
		t.Fatalf("%d waiting, want 2", s.Waiting)
	}
	p.Return(held)
	c := <-first
	select {
	case r := <-got:
		t.Fatalf("the callback was served before the Borrow ahead of it: %+v", r)
	case <-time.After(20 * time.Millisecond):
	}
	p.Return(c)
	r := <-got
	if r.err != nil || r.c != c {
		t.Fatalf("callback got %v, %v; want the returned connection", r.c, r.err)
	}
	p.Return(r.c)
	if c, queued := p.BorrowFunc(nil, time.Now(), fn); c == nil || queued {
		t.Fatalf("idle connection: %v, %v; want it at once", c, queued)
	} else {
		p.Return(c)
	}
	if s := p.Stats(); s.Open != 1 || s.Waiting != 0 {
		t.Fatalf("stats: %+v", s)
	}
}

// A queued callback times out with Borrow's 53300, once, and a pool that
// closes fails the callbacks waiting on it with ErrClosed.
func TestBorrowFuncTimeoutAndClose(t *testing.T) {
	p, _ := newTestPool(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 30 * time.Millisecond})
	held, err := p.Borrow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fn, got := callback()
	if _, queued := p.BorrowFunc(nil, time.Now(), fn); !queued {
		t.Fatal("not queued")
	}
	r := <-got
	var we *wire.Error
	if r.c != nil || !errors.As(r.err, &we) || we.Code != wire.CodeTooManyConnections || !errors.Is(r.err, ErrBorrowTimeout) {
		t.Fatalf("callback got %v, %v; want a 53300 borrow timeout", r.c, r.err)
	}
	p.Return(held) // nobody waits now: it goes idle, the callback is not called again
	select {
	case r := <-got:
		t.Fatalf("callback called twice: %+v", r)
	case <-time.After(20 * time.Millisecond):
	}
	if s := p.Stats(); s.Timeouts != 1 || s.Waiting != 0 || s.Idle != 1 {
		t.Fatalf("stats: %+v", s)
	}

	p.SetSettings(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 5 * time.Second})
	c, err := p.Borrow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, queued := p.BorrowFunc(nil, time.Now(), fn); !queued {
		t.Fatal("not queued")
	}
	p.Close()
	if r := <-got; r.c != nil || !errors.Is(r.err, ErrClosed) {
		t.Fatalf("callback on a closed pool got %v, %v; want ErrClosed", r.c, r.err)
	}
	p.Return(c)
}

// Callback waiters share one timer and still time out each at its own
// deadline: one queued after a reload shortened borrow_timeout goes
// before an older one with the longer timeout, which keeps waiting and
// can still be served.
func TestBorrowFuncTimeoutsInDeadlineOrder(t *testing.T) {
	p, _ := newTestPool(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 5 * time.Second})
	defer p.Close()
	held, err := p.Borrow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	long, gotLong := callback()
	if _, queued := p.BorrowFunc(nil, time.Now(), long); !queued {
		t.Fatal("not queued")
	}
	p.SetSettings(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 30 * time.Millisecond})
	short, gotShort := callback()
	start := time.Now()
	if _, queued := p.BorrowFunc(nil, time.Now(), short); !queued {
		t.Fatal("not queued")
	}
	select {
	case r := <-gotShort:
		if r.c != nil || !errors.Is(r.err, ErrBorrowTimeout) {
			t.Fatalf("the short waiter got %v, %v; want a borrow timeout", r.c, r.err)
		}
		if waited := time.Since(start); waited > 2*time.Second {
			t.Fatalf("the short waiter timed out after %v, behind the long one", waited)
		}
	case r := <-gotLong:
		t.Fatalf("the long waiter was answered first: %+v", r)
	}
	if s := p.Stats(); s.Waiting != 1 || s.Timeouts != 1 {
		t.Fatalf("after the short one: %+v", s)
	}
	p.Return(held)
	if r := <-gotLong; r.c == nil || r.err != nil {
		t.Fatalf("the long waiter got %v, %v; want the returned connection", r.c, r.err)
	}
}
