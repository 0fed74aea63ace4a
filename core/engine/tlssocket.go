package engine

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicedb/sluice/core/engine/evloop"
)

// TLS clients on an event loop. crypto/tls wants a blocking net.Conn, but
// it does not need one: a read that returns a temporary net.Error leaves
// the connection usable (the bytes of a partial record stay in the
// tls.Conn), and a write never has to fail if what the socket cannot take
// now is kept. TLSServer puts a tlsSocket under the client's tls.Conn;
// until the session moves to a loop it is the accepted connection, so the
// handshake and the login run on the session's goroutine as before. On the
// loop it reads the non-blocking socket, answering errWouldBlock when the
// socket is drained, and collects the records crypto/tls writes in
// pending, which the loop sends as it sends plaintext output. A TLS client
// then costs an idle loop session no goroutine and no buffer, only its
// tls.Conn.

// TLSServer returns the server side of a TLS connection over nc (the
// accepted client connection, after the SSLRequest was answered), as
// tls.Server does, in a form the event-loop engine can take over after
// the login. The caller does the handshake, and owns the result as a
// net.Conn.
func TLSServer(nc net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Server(&tlsSocket{conn: nc, fd: -1, local: nc.LocalAddr(), remote: nc.RemoteAddr()}, cfg)
}

// tlsSocket is the transport under a TLS client's tls.Conn. While a
// goroutine serves the session it passes every call to conn; on a loop
// (fd >= 0) only the loop calls it, and deadlines mean nothing.
type tlsSocket struct {
	tc   *tls.Conn // the TLS connection over this socket, set on a loop
	mu   sync.Mutex
	conn net.Conn // the accepted connection, nil on a loop; under mu
	fd   int      // the loop's descriptor, -1 before the loop
	l    *evloop.Loop
	// drained: the last read came up short, so the socket has nothing
	// until the next edge; ended: an edge told of the peer's end, after
	// which a short read proves nothing (peer.ended).
	drained, ended bool
	// pending is ciphertext crypto/tls wrote that the socket has not
	// taken yet.
	pending       []byte
	local, remote net.Addr
}

var _ net.Conn = (*tlsSocket)(nil)

// errWouldBlock is a read's answer on a loop when the socket has nothing:
// a temporary error, after which crypto/tls goes on.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// socketOf returns the tlsSocket under a TLS client connection, if it has
// one that an event loop can take.
func socketOf(c *tls.Conn) *tlsSocket {
	t, ok := c.NetConn().(*tlsSocket)
	if !ok {
		return nil
	}
	if _, ok := t.conn.(*net.TCPConn); !ok {
		return nil
	}
	return t
}

// toLoop makes the socket the loop's: fd is a non-blocking duplicate of
// the accepted connection, which the caller closes.
func (t *tlsSocket) toLoop(l *evloop.Loop, fd int, tc *tls.Conn) {
	t.mu.Lock()
	t.conn = nil
	t.mu.Unlock()
	t.l, t.fd, t.tc = l, fd, tc
	t.drained, t.ended = false, false
}

// toGoroutine gives the socket back to a goroutine, on nc; what is
// pending is written first (flushPending, or the next Write).
func (t *tlsSocket) toGoroutine(nc net.Conn) {
	t.mu.Lock()
	t.conn = nc
	t.mu.Unlock()
	t.fd, t.l = -1, nil
}

// Read reads the socket. On a loop it never blocks: errWouldBlock says
// there is nothing until the next edge.
func (t *tlsSocket) Read(b []byte) (int, error) {
	if t.fd < 0 {
		return t.conn.Read(b)
	}
	if t.drained {
		return 0, errWouldBlock
	}
	for {
		n, err := evloop.Read(t.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			t.drained = true
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		if n < len(b) && !t.ended {
			t.drained = true
		}
		return n, nil
	}
}

// Write writes b. On a loop it only collects b for send, so it never
// fails and never blocks; off a loop it writes what is pending first.
func (t *tlsSocket) Write(b []byte) (int, error) {
	if t.fd >= 0 {
		if t.pending == nil && len(b) <= evloop.BufferSize {
			t.pending = t.l.Buffer()
		}
		t.pending = append(t.pending, b...)
		return len(b), nil
	}
	if err := t.flushPending(); err != nil {
		return 0, err
	}
	return t.conn.Write(b)
}

// flushPending writes, off a loop, what the loop left pending.
func (t *tlsSocket) flushPending() error {
	if len(t.pending) == 0 {
		return nil
	}
	_, err := t.conn.Write(t.pending)
	t.pending = nil
	return err
}

// send writes pending until done or the socket is full. Loop only.
func (t *tlsSocket) send() (wrote bool, err error) {
	for len(t.pending) > 0 {
		n, err := evloop.Write(t.fd, t.pending)
		if n > 0 {
			wrote = true
			rest := copy(t.pending, t.pending[n:])
			t.pending = t.pending[:rest]
		}
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return wrote, nil
		case err != nil:
			return wrote, err
		}
	}
	t.l.Recycle(t.pending)
	t.pending = nil
	return wrote, nil
}

// Close closes the accepted connection; on a loop the loop closes its
// descriptor itself.
func (t *tlsSocket) Close() error {
	t.mu.Lock()
	c := t.conn
	t.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close()
}

func (t *tlsSocket) LocalAddr() net.Addr  { return t.local }
func (t *tlsSocket) RemoteAddr() net.Addr { return t.remote }

// SetDeadline and the two below may be called from other goroutines
// (Session.wake); on a loop they do nothing.
func (t *tlsSocket) SetDeadline(d time.Time) error {
	return t.deadline(func(c net.Conn) error { return c.SetDeadline(d) })
}

func (t *tlsSocket) SetReadDeadline(d time.Time) error {
	return t.deadline(func(c net.Conn) error { return c.SetReadDeadline(d) })
}

func (t *tlsSocket) SetWriteDeadline(d time.Time) error {
	return t.deadline(func(c net.Conn) error { return c.SetWriteDeadline(d) })
}

func (t *tlsSocket) deadline(set func(net.Conn) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return nil
	}
	return set(t.conn)
}

// readTLS reads once through the client's TLS connection into p.in's
// space: at most one record's plaintext.
func (p *peer) readTLS(space []byte) {
	t := p.tls
	t.ended = p.ended
	n, err := t.tc.Read(space)
	p.in = p.in[:len(p.in)+n]
	switch {
	case err == nil:
	case err == errWouldBlock:
		p.readable = false
	case err == io.EOF:
		p.eof = errPeerEOF
	default:
		p.eof = err
	}
}

// flushTLS encrypts the output and writes the records until done or the
// socket is full: records already made go first, so that what waits for
// the socket is never more than one output's worth.
func (p *peer) flushTLS(l *evloop.Loop) bool {
	t := p.tls
	wrote := false
	for p.werr == nil {
		if len(t.pending) > 0 {
			w, err := t.send()
			wrote = wrote || w
			if err != nil {
				p.werr = err
				break
			}
			if len(t.pending) > 0 {
				break // the socket is full
			}
		}
		if len(p.out) == 0 {
			break
		}
		if _, err := t.tc.Write(p.out); err != nil {
			p.werr = err
			break
		}
		l.Recycle(p.out)
		p.out = nil
		wrote = true
	}
	return wrote
}
