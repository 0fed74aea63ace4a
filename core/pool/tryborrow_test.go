package pool

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/wire"
)

// testHome is a Home owned by owner that polls nothing.
type testHome struct{ owner any }

func (testHome) Closing(*Conn) {}
func (h testHome) Owner() any  { return h.owner }

// tcpDialer opens loopback TCP connections to a listener whose accepted
// ends it keeps, so that a test can close the server's side.
type tcpDialer struct {
	ln      net.Listener
	servers chan net.Conn
}

func newTCPDialer(t *testing.T) *tcpDialer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &tcpDialer{ln: ln, servers: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.servers <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return d
}

func (d *tcpDialer) dial(ctx context.Context) (*Conn, error) {
	nc, err := net.Dial("tcp", d.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	return &Conn{R: wire.NewReader(nc), W: wire.NewWriter(nc), netConn: nc, created: time.Now(),
		ServerState: ServerState{Params: map[string]string{}, Reported: map[string]string{}}}, nil
}

// TryBorrow lends a connection that sat idle past the health-check delay
// when its home is the caller's, after a non-blocking check: one whose
// server went away meanwhile is closed, and the caller told to take the
// slow path. One homed elsewhere is left to Borrow.
func TestTryBorrowChecksItsOwnLongIdleConnections(t *testing.T) {
	d := newTCPDialer(t)
	p := New("test", d.dial, Settings{MaxConnections: 2, MaxIdleConnections: 2, BorrowTimeout: time.Second}, zap.NewNop())
	defer p.Close()
	ctx := context.Background()
	loop, other := new(int), new(int)
	a, err := p.Borrow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Borrow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srvA, srvB := <-d.servers, <-d.servers
	defer srvA.Close()
	for _, c := range []*Conn{a, b} {
		if _, _, err := c.Detach(testHome{loop}); err != nil {
			t.Fatal(err)
		}
	}
	p.Return(b)
	p.Return(a) // a on top: TryBorrow takes it first
	time.Sleep(2 * healthCheckAfter)

	if c := p.TryBorrow(other, time.Now()); c != nil {
		t.Fatalf("lent a long-idle connection of another loop without a check: %p", c)
	}
	if c := p.TryBorrow(loop, time.Now()); c != a {
		t.Fatalf("TryBorrow of the owner's long-idle live connection = %p, want %p", c, a)
	}
	srvB.Close() // b's server goes away while b is idle
	time.Sleep(20 * time.Millisecond)
	if c := p.TryBorrow(loop, time.Now()); c != nil {
		t.Fatalf("lent a connection whose server closed it: %p", c)
	}
	if s := p.Stats(); s.Open != 1 || s.Idle != 0 {
		t.Fatalf("after the dead one: %+v, want the live one alone open (lent)", s)
	}
	p.Return(a)
	if c := p.TryBorrow(loop, time.Now()); c != a {
		t.Fatalf("a connection just returned = %p, want %p", c, a)
	}
	p.Return(a)
}
