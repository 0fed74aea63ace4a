package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/wire"
)

// Endpoint says how to open server connections for one pool.
type Endpoint struct {
	// Addr is the server's host:port.
	Addr string
	// Name names the server in client-facing errors, as in cluster "main";
	// it must not contain addresses or credentials. Empty means "the
	// database server".
	Name string
	// Database and User are sent in the StartupMessage; Password answers
	// the server's authentication request (trust, cleartext, md5, SCRAM).
	Database, User, Password string
	// InitQuery, when set, runs once on every new connection.
	InitQuery string
	// ReadOnly starts each session with default_transaction_read_only on,
	// so that a write fails as on a standby (25006); RESET and DISCARD ALL
	// keep it, since it is the session's startup value.
	ReadOnly bool
	// ConnectTimeout bounds dialling, the TLS handshake, authentication
	// and InitQuery.
	ConnectTimeout time.Duration
	// TLS says whether and how connections are encrypted; the zero value
	// is plaintext.
	TLS TLS
}

// server names the endpoint's server for client-facing messages.
func (ep Endpoint) server() string { return describeServer(ep.Name) }

// describeServer names the server of the endpoint called name.
func describeServer(name string) string {
	if name == "" {
		return "the database server"
	}
	return "the server of " + name
}

// ErrConnect wraps failures to reach or log in to a server.
var ErrConnect = errors.New("cannot connect to server")

// Connect opens, secures as ep.TLS asks, and authenticates a new server
// connection. PostgreSQL's own errors (unknown database, failed login)
// come back as *wire.Error values that may be shown to the client; so do
// TLS failures (SQLSTATE 08001 when the server cannot meet ep.TLS.Mode,
// 08P01 when it answers the SSLRequest with nonsense); network failures
// as a generic 08006.
func Connect(ctx context.Context, ep Endpoint) (*Conn, error) {
	if ep.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ep.ConnectTimeout)
		defer cancel()
	}
	nc, stop, err := dial(ctx, ep.Addr)
	if err != nil {
		return nil, err
	}
	defer stop()
	stream, err := startTLS(nc, ep.Addr, ep.server(), ep.TLS)
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, timedOut(ep.Addr, ctx.Err())
		}
		return nil, err
	}

	c := &Conn{
		R: wire.NewReader(stream),
		W: wire.NewWriter(stream),
		ServerState: ServerState{
			Params:   make(map[string]string, 16),
			Reported: make(map[string]string, 16),
		},
		netConn: stream,
		addr:    ep.Addr,
		name:    ep.Name,
		tls:     ep.TLS,
		created: time.Now(),
	}
	if err := c.login(ep); err != nil {
		nc.Close()
		var we *wire.Error
		if errors.As(err, &we) {
			return nil, we
		}
		return nil, couldNotConnect(ep.Addr, err)
	}
	if !stop() {
		nc.Close()
		return nil, timedOut(ep.Addr, ctx.Err())
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// dial opens a TCP connection to addr whose I/O ends when ctx does: its
// deadline is ctx's, and it is set to now when ctx is cancelled until stop
// is called. stop reports whether it came before ctx ended. The caller
// owns the connection and must call stop.
func dial(ctx context.Context, addr string) (nc net.Conn, stop func() bool, err error) {
	var d net.Dialer
	nc, err = d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, couldNotConnect(addr, fmt.Errorf("dialing: %w", err))
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(30 * time.Second)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	return nc, stop, nil
}

// timedOut is the client-facing error for a connection attempt that ran
// out of time.
func timedOut(addr string, err error) *wire.Error {
	return wire.Errorf(wire.CodeConnectionFailure, "timed out connecting to the database server").
		Wrap(fmt.Errorf("%w: %s: %w", ErrConnect, addr, err))
}

// transport adapts a Conn to auth.Transport.
type transport struct{ c *Conn }

func (t transport) ReadMessage() (byte, []byte, error) { return t.c.R.ReadMessage() }
func (t transport) WriteMessage(b []byte) error        { return t.c.W.WriteMessage(b) }

func (c *Conn) login(ep Endpoint) error {
	params := []wire.Param{{Name: "user", Value: ep.User}, {Name: "database", Value: ep.Database}}
	if ep.ReadOnly {
		params = append(params, wire.Param{Name: "default_transaction_read_only", Value: "on"})
	}
	startup := wire.EncodeStartup(nil, params)
	if err := c.W.WriteMessage(startup); err != nil {
		return err
	}
	if err := auth.AuthenticateToServer(transport{c}, ep.User, ep.Password); err != nil {
		var se *auth.ServerError
		if errors.As(err, &se) {
			return &wire.Error{Severity: se.Severity, Code: se.Code, Message: se.Message, Err: ErrServer}
		}
		return err
	}
	for {
		typ, body, err := c.R.ReadMessage()
		if err != nil {
			return err
		}
		switch typ {
		case wire.MsgParameterStatus:
			if name, value, ok := wire.ParseParameterStatus(body); ok {
				c.Params[name] = value
				c.Reported[name] = value
			}
		case wire.MsgBackendKeyData:
			if len(body) == 8 {
				c.ProcessID = be32(body)
				c.SecretKey = be32(body[4:])
			}
		case wire.MsgErrorResponse:
			return DecodeError(body)
		case wire.MsgReadyForQuery:
			if ep.InitQuery != "" {
				if err := c.Exec(ep.InitQuery); err != nil {
					return fmt.Errorf("init_query: %w", err)
				}
			}
			return nil
		}
	}
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
