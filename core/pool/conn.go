package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgproto3/v2"

	"github.com/sluicedb/sluice/core/wire"
)

// Conn is one server connection: an authenticated PostgreSQL backend session
// owned by a Pool. Between Borrow and Return it belongs to exactly one
// borrower, which may use R and W; it is not safe for concurrent use except
// for MarkBroken, Broken and Cancel.
type Conn struct {
	// R reads messages from the server; W buffers messages to it.
	R *wire.Reader
	W *wire.Writer

	// ServerState is the bookkeeping the borrower keeps about the server
	// session; the session machine reads and updates it.
	ServerState

	netConn   net.Conn // the stream R and W use: a *tls.Conn or the socket
	addr      string
	name      string // Endpoint.Name
	tls       TLS    // Endpoint.TLS, for cancel requests
	created   time.Time
	idleSince time.Time
	lentAt    int // 1 + its index in the pool's lent list; 0 when not lent
	broken    atomic.Bool
	pool      *Pool
	home      Home // where the socket is polled when detached; nil on Go's poller
}

// Addr returns the server address the connection was dialled to. It is for
// logs and cancel requests, never for clients.
func (c *Conn) Addr() string { return c.addr }

// MarkBroken records that the connection must not be reused: the pool
// closes it on Return. Safe for concurrent use.
func (c *Conn) MarkBroken() { c.broken.Store(true) }

// Broken reports whether MarkBroken was called.
func (c *Conn) Broken() bool { return c.broken.Load() }

// SetReadDeadline sets the read deadline of the connection. Under TLS a
// read that times out can be retried: no data is lost.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.netConn.SetReadDeadline(t) }

// RawConn returns the connection's socket: the TCP connection beneath TLS,
// or the connection itself in plaintext. It is for waiting until the
// socket is readable and for socket options; reading or writing it
// directly would corrupt a TLS stream. Note that under TLS, readable data
// on the socket may be a TLS record that holds no message, and a message
// may already be decrypted and buffered with nothing left on the socket:
// check R.Buffered first.
func (c *Conn) RawConn() net.Conn {
	if tc, ok := c.netConn.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c.netConn
}

// Plaintext reports a connection without TLS.
func (c *Conn) Plaintext() bool {
	_, isTLS := c.netConn.(*tls.Conn)
	return !isTLS
}

// Close closes the network connection after a best-effort Terminate. It
// closes the socket without a TLS close_notify, which could wait seconds
// for a server that reads nothing; PostgreSQL needs only the Terminate.
func (c *Conn) Close() error {
	if f, ok := c.netConn.(*fdConn); ok {
		return c.closeDetached(f)
	}
	raw := c.RawConn()
	raw.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.W.WriteMessage(wire.AppendTerminate(nil))
	return raw.Close()
}

// ErrCancel wraps the errors of Cancel.
var ErrCancel = errors.New("cannot send cancel request")

// Cancel asks the server to cancel whatever c's backend is running, as a
// client's CancelRequest does
// (https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.9): it
// opens a new connection to the same server, negotiates TLS as c's was
// negotiated, sends a CancelRequest with c's ProcessID and SecretKey and
// waits until the server closes that connection, which it does once it has
// signalled the backend. ctx bounds the whole exchange. The server does not
// say whether anything was cancelled; a nil error means the request was
// delivered. Cancel does not touch c's own connection and may be called
// from any goroutine while another uses c.
func (c *Conn) Cancel(ctx context.Context) error {
	nc, stop, err := dial(ctx, c.addr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCancel, err)
	}
	defer nc.Close()
	defer stop()
	stream, err := startTLS(nc, c.addr, describeServer(c.name), c.tls)
	if err == nil {
		_, err = stream.Write(wire.EncodeCancel(c.ProcessID, c.SecretKey))
	}
	if err == nil {
		// The server sends nothing back; wait for its end of file.
		var b [64]byte
		for err == nil {
			_, err = stream.Read(b[:])
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil // end of file or reset: the server is done with it
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w to %s: %w", ErrCancel, c.addr, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("%w to %s: %w", ErrCancel, c.addr, err)
	}
	return nil
}

// ErrServer wraps errors that PostgreSQL reported on a server connection.
var ErrServer = errors.New("server error")

// Exec runs sql as a simple query and reads the replies up to ReadyForQuery,
// recording ParameterStatus changes in Params. A SQL error is returned as a
// *wire.Error with the server's severity, SQLSTATE and message; any other
// error means the connection is unusable. The connection must be idle.
func (c *Conn) Exec(sql string) error {
	_, err := c.run(sql)
	return err
}

// QueryRow runs sql as a simple query that returns one row and returns
// the row's values as text (NULL as ""). The connection must be idle.
func (c *Conn) QueryRow(sql string) ([]string, error) {
	row, err := c.run(sql)
	if err == nil && row == nil {
		err = errors.New("query returned no row")
	}
	return row, err
}

// run sends sql as a simple query and reads every reply up to
// ReadyForQuery, which must report an idle connection. It returns the last
// row, decoded as text.
func (c *Conn) run(sql string) ([]string, error) {
	if err := c.W.WriteMessage(wire.AppendQuery(nil, sql)); err != nil {
		return nil, fmt.Errorf("sending query: %w", err)
	}
	var row []string
	var sqlErr error
	for {
		typ, body, err := c.R.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("reading reply: %w", err)
		}
		switch typ {
		case wire.MsgDataRow:
			if row, err = wire.ParseDataRow(body); err != nil {
				return nil, err
			}
		case wire.MsgErrorResponse:
			sqlErr = DecodeError(body)
		case wire.MsgParameterStatus:
			c.noteParameterStatus(body)
		case wire.MsgReadyForQuery:
			if len(body) != 1 || body[0] != wire.TxIdle {
				return nil, fmt.Errorf("server left a transaction open after %q", sql)
			}
			if sqlErr != nil {
				return nil, sqlErr
			}
			return row, nil
		}
	}
}

// noteParameterStatus records a ParameterStatus the server sent.
func (c *Conn) noteParameterStatus(body []byte) {
	if name, value, ok := wire.ParseParameterStatus(body); ok {
		c.NoteParameterStatus(name, value)
	}
}

// DecodeError turns an ErrorResponse body into a *wire.Error carrying the
// server's own severity, SQLSTATE and texts.
func DecodeError(body []byte) *wire.Error {
	var m pgproto3.ErrorResponse
	if err := m.Decode(body); err != nil {
		return wire.Errorf(wire.CodeProtocolViolation, "malformed error from server")
	}
	sev := m.SeverityUnlocalized
	if sev == "" {
		sev = m.Severity
	}
	return &wire.Error{Severity: sev, Code: m.Code, Message: m.Message, Detail: m.Detail, Hint: m.Hint, Err: ErrServer}
}

// alive reports whether an idle connection is still usable: nothing is
// buffered and the socket has neither unread data (such as the FATAL a
// terminated backend sends) nor end of file. It costs one non-blocking
// recv(MSG_PEEK).
func (c *Conn) alive() bool {
	if c.broken.Load() || c.R.Buffered() > 0 {
		return false
	}
	// Under TLS the socket is checked beneath the encryption: any record
	// the server sends an idle connection means it is going away.
	sc, ok := c.RawConn().(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && ok
}

// SetDeadline sets the read and write deadlines of the connection. Under
// TLS a write that times out leaves the connection unusable.
func (c *Conn) SetDeadline(t time.Time) error { return c.netConn.SetDeadline(t) }

// Sync sends a Sync, discards the replies to whatever was pending, and
// returns the transaction status of the final ReadyForQuery.
func (c *Conn) Sync() (byte, error) {
	if err := c.W.WriteMessage(wire.AppendSync(nil)); err != nil {
		return 0, err
	}
	for {
		typ, body, err := c.R.ReadMessage()
		if err != nil {
			return 0, err
		}
		switch typ {
		case wire.MsgParameterStatus:
			c.noteParameterStatus(body)
		case wire.MsgReadyForQuery:
			if len(body) == 1 {
				return body[0], nil
			}
			return 0, wire.ErrBadLength
		}
	}
}
