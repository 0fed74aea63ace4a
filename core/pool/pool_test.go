package pool

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/wire"
)

// pipeDialer opens connections over net.Pipe; the far ends are drained.
type pipeDialer struct {
	dials atomic.Int64
	fail  atomic.Bool
}

func (d *pipeDialer) dial(ctx context.Context) (*Conn, error) {
	if d.fail.Load() {
		return nil, errors.New("refused")
	}
	d.dials.Add(1)
	a, b := net.Pipe()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	return &Conn{R: wire.NewReader(a), W: wire.NewWriter(a), netConn: a, created: time.Now(),
		ServerState: ServerState{Params: map[string]string{}, Reported: map[string]string{}}}, nil
}

func newTestPool(s Settings) (*Pool, *pipeDialer) {
	d := &pipeDialer{}
	return New("test", d.dial, s, zap.NewNop()), d
}

func TestBorrowReusesIdleConnections(t *testing.T) {
	p, d := newTestPool(Settings{MaxConnections: 2, MaxIdleConnections: 2, BorrowTimeout: time.Second})
	defer p.Close()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		c, err := p.Borrow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p.Return(c)
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("dialled %d times for sequential borrows, want 1", n)
	}
}

func TestBorrowTimeoutNamesThePool(t *testing.T) {
	p, _ := newTestPool(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 50 * time.Millisecond})
	defer p.Close()
	ctx := context.Background()
	held, err := p.Borrow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Borrow(ctx)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeTooManyConnections || !errors.Is(err, ErrBorrowTimeout) {
		t.Fatalf("err = %v, want 53300 borrow timeout", err)
	}
	p.Return(held)
	if s := p.Stats(); s.Timeouts != 1 || s.Open != 1 || s.Waiting != 0 {
		t.Fatalf("stats after timeout: %+v", s)
	}
}

func TestWaitersAreServedInOrder(t *testing.T) {
	p, _ := newTestPool(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: 5 * time.Second})
	defer p.Close()
	ctx := context.Background()
	held, _ := p.Borrow(ctx)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := p.Borrow(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			p.Return(c)
		}(i)
		// Queue them one at a time so their arrival order is known.
		for p.Stats().Waiting != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	p.Return(held)
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("served in order %v, want first come first served", order)
		}
	}
}

func TestNeverMoreThanMaxConnections(t *testing.T) {
	p, d := newTestPool(Settings{MaxConnections: 3, MaxIdleConnections: 3, BorrowTimeout: 5 * time.Second})
	defer p.Close()
	var inUse, peak atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				c, err := p.Borrow(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if n := inUse.Add(1); n > peak.Load() {
					peak.Store(n)
				}
				time.Sleep(50 * time.Microsecond)
				inUse.Add(-1)
				if j%7 == 0 {
					p.Discard(c)
				} else {
					p.Return(c)
				}
			}
		}()
	}
	wg.Wait()
	if peak.Load() > 3 {
		t.Fatalf("%d connections in use at once, want at most 3", peak.Load())
	}
	if s := p.Stats(); s.Open > 3 || s.Borrowed != 0 {
		t.Fatalf("stats after the run: %+v (dials %d)", s, d.dials.Load())
	}
}

func TestDialFailureFreesTheSlot(t *testing.T) {
	p, d := newTestPool(Settings{MaxConnections: 1, MaxIdleConnections: 1, BorrowTimeout: time.Second})
	defer p.Close()
	d.fail.Store(true)
	if _, err := p.Borrow(context.Background()); err == nil {
		t.Fatal("borrow succeeded with a failing dialer")
	}
	d.fail.Store(false)
	c, err := p.Borrow(context.Background())
	if err != nil {
		t.Fatalf("slot not freed after a failed dial: %v", err)
	}
	p.Return(c)
}

func TestSetSettingsGrowsAndShrinks(t *testing.T) {
	s := Settings{MaxConnections: 1, MaxIdleConnections: 5, BorrowTimeout: 5 * time.Second}
	p, _ := newTestPool(s)
	defer p.Close()
	ctx := context.Background()
	a, _ := p.Borrow(ctx)
	got := make(chan *Conn)
	go func() {
		c, err := p.Borrow(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	for p.Stats().Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	s.MaxConnections = 2
	p.SetSettings(s)
	b := <-got // served by a new connection, not by a
	if p.Stats().Open != 2 {
		t.Fatalf("open = %d after growing to 2", p.Stats().Open)
	}
	s.MaxConnections = 1
	p.SetSettings(s)
	p.Return(a)
	p.Return(b)
	if st := p.Stats(); st.Open != 1 {
		t.Fatalf("open = %d after shrinking to 1, want 1", st.Open)
	}
}

func TestBrokenAndExpiredConnectionsAreClosed(t *testing.T) {
	p, d := newTestPool(Settings{MaxConnections: 2, MaxIdleConnections: 2, BorrowTimeout: time.Second, Lifetime: time.Hour, IdleTimeout: time.Minute})
	defer p.Close()
	ctx := context.Background()
	c, _ := p.Borrow(ctx)
	c.MarkBroken()
	p.Return(c)
	c, _ = p.Borrow(ctx)
	c.created = time.Now().Add(-2 * time.Hour)
	p.Return(c)
	c, _ = p.Borrow(ctx)
	p.Return(c)
	p.Reap(time.Now().Add(2 * time.Minute))
	if st := p.Stats(); st.Open != 0 || d.dials.Load() != 3 {
		t.Fatalf("stats %+v after broken, expired and idle connections; dials %d", st, d.dials.Load())
	}
}
