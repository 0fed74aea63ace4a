package evloop

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// echo reads its socket on every edge and writes back what it read.
type echo struct {
	fd     int
	events atomic.Int32
}

func (e *echo) Event(ev uint32) {
	e.events.Add(1)
	var buf [64]byte
	for {
		n, err := unix.Read(e.fd, buf[:])
		if n <= 0 || err != nil {
			return
		}
		unix.Write(e.fd, buf[:n])
	}
}

func run(t *testing.T) *Loop {
	t.Helper()
	l, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	go l.Run()
	t.Cleanup(func() {
		l.Close()
		<-l.Done()
	})
	return l
}

// onLoop runs f on l and waits for it.
func onLoop(l *Loop, f func()) {
	done := make(chan struct{})
	l.Post(func() { f(); close(done) })
	<-done
}

func TestEchoAndRemove(t *testing.T) {
	l := run(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	e := &echo{fd: fds[0]}
	var reg Reg
	onLoop(l, func() { reg, err = l.Add(fds[0], e) })
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fds[1], false)
	for i := range 3 {
		msg := []byte{'a' + byte(i)}
		unix.Write(fds[1], msg)
		var got [1]byte
		if n, err := unix.Read(fds[1], got[:]); n != 1 || err != nil || got[0] != msg[0] {
			t.Fatalf("round %d: read %d %v %q", i, n, err, got)
		}
	}
	onLoop(l, func() { l.Remove(reg) })
	before := e.events.Load()
	unix.Write(fds[1], []byte("x"))
	onLoop(l, func() {}) // an iteration passes
	time.Sleep(20 * time.Millisecond)
	onLoop(l, func() {})
	if e.events.Load() != before {
		t.Error("a removed socket's handler was still called")
	}
}

func TestPostAndAfterFunc(t *testing.T) {
	l := run(t)
	got := make(chan int, 3)
	// From other goroutines while the loop sleeps, and from the loop.
	l.Post(func() { got <- 1; l.Post(func() { got <- 2 }) })
	l.AfterFunc(5*time.Millisecond, func() { got <- 3 })
	for want := 1; want <= 3; want++ {
		select {
		case v := <-got:
			if v != want {
				t.Fatalf("got %d, want %d", v, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("function %d never ran", want)
		}
	}
}

func TestBuffers(t *testing.T) {
	l := run(t)
	onLoop(l, func() {
		b := l.Buffer()
		if len(b) != 0 || cap(b) != BufferSize {
			t.Errorf("Buffer: len %d cap %d", len(b), cap(b))
		}
		l.Recycle(append(b, 1))
		if c := l.Buffer(); &c[:1][0] != &b[:1][0] {
			t.Error("a recycled buffer was not reused")
		}
	})
}

// Spare buffers that were not needed during a spareTTL are dropped at its
// end; the ones that were needed stay for the next period.
func TestSpareBuffersTrimmed(t *testing.T) {
	l, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l.epfd)
	defer unix.Close(l.wakefd)
	start := time.Now()
	l.now, l.trimmed = start, start
	lent := make([][]byte, 4)
	for i := range lent {
		lent[i] = l.Buffer()
	}
	for _, b := range lent {
		l.Recycle(b)
	}
	if next := l.trimSpare(); next != spareTTL || len(l.spare) != 4 {
		t.Fatalf("before spareTTL: next trim in %v with %d spare; want %v with 4", next, len(l.spare), spareTTL)
	}
	l.now = start.Add(spareTTL)
	l.trimSpare() // all four were needed during the first period
	if len(l.spare) != 4 {
		t.Fatalf("after a period that needed 4 buffers: %d spare, want 4", len(l.spare))
	}
	b := l.Buffer()
	l.Recycle(b)
	l.now = start.Add(2 * spareTTL)
	if next := l.trimSpare(); next != spareTTL || len(l.spare) != 1 || &l.spare[0][:1][0] != &b[:1][0] {
		t.Fatalf("after a period that needed one buffer: next trim in %v with %d spare; want %v with the one used", next, len(l.spare), spareTTL)
	}
	l.now = start.Add(3 * spareTTL)
	if next := l.trimSpare(); next != -1 || len(l.spare) != 0 {
		t.Fatalf("after a period that needed none: next trim in %v with %d spare; want -1 with none", next, len(l.spare))
	}
}

// A loop that goes idle with spare buffers wakes up to drop them: nothing
// is posted to it meanwhile.
func TestIdleLoopDropsSpareBuffers(t *testing.T) {
	l := run(t)
	onLoop(l, func() {
		b := l.Buffer()
		l.Recycle(b)
	})
	// The first trim finds the buffer needed during its period, the
	// second drops it.
	time.Sleep(2*spareTTL + time.Second)
	var spare int
	onLoop(l, func() { spare = len(l.spare) })
	if spare != 0 {
		t.Fatalf("an idle loop still keeps %d spare buffers after %v", spare, 2*spareTTL+time.Second)
	}
}

// Read and Write move bytes over a non-blocking socket and report EAGAIN
// and the end of the stream as unix.Read and unix.Write do.
func TestReadWrite(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	buf := make([]byte, 8)
	if n, err := Read(fds[0], buf); n != -1 || err != unix.EAGAIN {
		t.Fatalf("read of an empty socket: %d, %v; want -1, EAGAIN", n, err)
	}
	if n, err := Write(fds[1], []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if n, err := Read(fds[0], buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %d, %v, %q", n, err, buf[:max(n, 0)])
	}
	unix.Close(fds[1])
	if n, err := Read(fds[0], buf); n != 0 || err != nil {
		t.Fatalf("read after the peer closed: %d, %v; want 0, nil", n, err)
	}
	if n, err := Write(fds[0], []byte("x")); n != -1 || err != unix.EPIPE {
		t.Fatalf("write to a closed peer: %d, %v; want -1, EPIPE", n, err)
	}
}
