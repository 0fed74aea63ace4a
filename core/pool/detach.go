package pool

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicedb/sluice/core/wire"
)

// A Home polls the socket of a detached connection: an event loop of the
// engine. The pool tells it when the connection is about to be closed.
type Home interface {
	// Closing is called once, from any goroutine, just before the
	// connection's socket is closed; the home must forget the socket
	// without touching it (its number may be reused at once).
	Closing(c *Conn)
	// Owner is what TryBorrow's owner is compared with: the event loop.
	Owner() any
}

// ErrNotDetachable is returned by Detach for a connection under TLS: its
// stream needs crypto/tls and a blocking net.Conn.
var ErrNotDetachable = errors.New("a TLS connection cannot leave Go's poller")

// Detach takes the connection's socket off Go's poller for home: it
// returns the socket, non-blocking, and what R had buffered, which the
// caller must treat as read first. W must have nothing buffered. From then
// on R and W still work, blocking with poll(2) (for the pool's own queries
// off the loop; deadlines are honoured within 50 ms), and the connection
// is closed by the pool as before. The caller owns the connection (it is
// borrowed).
func (c *Conn) Detach(home Home) (fd int, buffered []byte, err error) {
	if c.home != nil {
		return 0, nil, errors.New("connection already detached")
	}
	tc, ok := c.netConn.(*net.TCPConn)
	if !ok {
		return 0, nil, ErrNotDetachable
	}
	if c.W.Buffered() > 0 {
		if err := c.W.Flush(); err != nil {
			return 0, nil, err
		}
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	fd = -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.Dup(int(s)) }); err != nil {
		return 0, nil, err
	}
	if dupErr != nil {
		return 0, nil, fmt.Errorf("dup: %w", dupErr)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return 0, nil, err
	}
	buffered = c.R.TakeBuffered()
	f := &fdConn{fd: fd, local: tc.LocalAddr(), remote: tc.RemoteAddr()}
	tc.Close() // Go's poller forgets the socket; fd still holds it
	c.netConn = f
	c.R.Reset(f)
	c.W.Reset(f)
	c.home = home
	return fd, buffered, nil
}

// Home returns the home of a detached connection, or nil.
func (c *Conn) Home() Home { return c.home }

// SetHome moves a detached connection to another home (another loop).
func (c *Conn) SetHome(h Home) { c.home = h }

// Reattach gives a detached connection's socket back to Go's poller; the
// caller has unregistered it from its home, and R holds nothing.
func (c *Conn) Reattach() error {
	f, ok := c.netConn.(*fdConn)
	if !ok {
		return nil
	}
	if err := unix.SetNonblock(f.fd, true); err != nil {
		return err
	}
	file := os.NewFile(uintptr(f.fd), "server")
	nc, err := net.FileConn(file) // a dup of its own, on Go's poller
	file.Close()
	if err != nil {
		return err
	}
	c.netConn = nc
	c.R.Reset(nc)
	c.W.Reset(nc)
	c.home = nil
	return nil
}

// closeDetached closes a detached connection's socket, after a
// best-effort Terminate that never waits.
func (c *Conn) closeDetached(f *fdConn) error {
	unix.Write(f.fd, wire.AppendTerminate(nil))
	if c.home != nil {
		c.home.Closing(c)
	}
	return f.Close()
}

// breakSocket makes every read and write of the connection fail, from any
// goroutine, without closing a socket someone may still be using.
func (c *Conn) breakSocket() {
	if f, ok := c.netConn.(*fdConn); ok {
		unix.Shutdown(f.fd, unix.SHUT_RDWR)
		return
	}
	c.RawConn().Close()
}

// fdConn is a detached socket as a blocking net.Conn, for the few uses of
// a connection off its event loop: reads and writes wait with poll(2).
type fdConn struct {
	fd            int
	local, remote net.Addr
	rdl, wdl      atomic.Int64 // deadlines, unix nanoseconds; 0 for none
	closed        atomic.Bool
}

var _ net.Conn = (*fdConn)(nil)

// pollSlice is the longest one poll(2) waits before looking at the
// deadline again (which another goroutine may have moved).
const pollSlice = 50 * time.Millisecond

func (f *fdConn) wait(events int16, dl *atomic.Int64) error {
	for {
		if f.closed.Load() {
			return net.ErrClosed
		}
		timeout := pollSlice
		if d := dl.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = min(timeout, left)
		}
		fds := []unix.PollFd{{Fd: int32(f.fd), Events: events}}
		n, err := unix.Poll(fds, int(timeout.Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

func (f *fdConn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, b)
		switch {
		case err == nil && n == 0 && len(b) > 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err == unix.EINTR:
			continue
		case err != unix.EAGAIN:
			return 0, &net.OpError{Op: "read", Net: "tcp", Addr: f.remote, Err: err}
		}
		if err := f.wait(unix.POLLIN, &f.rdl); err != nil {
			return 0, err
		}
	}
}

func (f *fdConn) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Write(f.fd, b[done:])
		if n > 0 {
			done += n
		}
		switch {
		case err == nil || err == unix.EINTR:
			continue
		case err != unix.EAGAIN:
			return done, &net.OpError{Op: "write", Net: "tcp", Addr: f.remote, Err: err}
		}
		if err := f.wait(unix.POLLOUT, &f.wdl); err != nil {
			return done, err
		}
	}
	return done, nil
}

func (f *fdConn) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	return unix.Close(f.fd)
}

func (f *fdConn) LocalAddr() net.Addr  { return f.local }
func (f *fdConn) RemoteAddr() net.Addr { return f.remote }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (f *fdConn) SetDeadline(t time.Time) error {
	f.rdl.Store(nanos(t))
	f.wdl.Store(nanos(t))
	return nil
}
func (f *fdConn) SetReadDeadline(t time.Time) error  { f.rdl.Store(nanos(t)); return nil }
func (f *fdConn) SetWriteDeadline(t time.Time) error { f.wdl.Store(nanos(t)); return nil }

// SyscallConn lets the pool's readiness checks (alive, Readable) peek at
// the socket as they do on Go's poller.
func (f *fdConn) SyscallConn() (syscall.RawConn, error) { return fdRaw{f.fd}, nil }

// fdRaw is the syscall.RawConn of a detached socket: Read calls its
// function once, as the checks need.
type fdRaw struct{ fd int }

func (r fdRaw) Control(fn func(uintptr)) error    { fn(uintptr(r.fd)); return nil }
func (r fdRaw) Read(fn func(uintptr) bool) error  { fn(uintptr(r.fd)); return nil }
func (r fdRaw) Write(fn func(uintptr) bool) error { fn(uintptr(r.fd)); return nil }
