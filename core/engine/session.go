// Package engine moves bytes for session machines (core/session). This is
// the goroutine engine: one goroutine per client reads the client and the
// server connection it borrows, hands each framed message to the client's
// machine and carries out the Step it returns. No second goroutine reads
// either socket: while the client is awaited with a server connection held
// and the server may speak (a notification to a pinned client), a watcher
// waits for the server socket to become readable, reading nothing, and
// wakes the session goroutine.
package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/engine/evloop"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
)

// User is what the proxy knows of a client user: how to check it and which
// credentials to use towards PostgreSQL.
type User struct {
	Secret          *auth.Secret
	BackendUser     string
	BackendPassword string
}

// Env is what a session needs from the proxy that runs it. Its functions
// must be safe for concurrent use.
type Env struct {
	Session    *session.Config
	AuthMethod auth.Method
	// LookupUser returns the configured user of that name, or nil.
	LookupUser func(name string) *User
	// Pool returns the pool a route leads to for a backend user and
	// database: the topology seam, asked at every borrow, so that a new
	// writer or a change of replicas applies to the next transaction. The
	// route's zero value is the listener's default role of the session's
	// cluster. It may wait (within ctx and the borrow timeout) while the
	// cluster has no writer.
	Pool func(ctx context.Context, u *User, database string, r session.Route) (*pool.Pool, error)
	// Borrow lends a server connection for a route: Pool and its Borrow,
	// retried across a failover while the endpoint cannot be reached.
	Borrow func(ctx context.Context, u *User, database string, r session.Route) (*pool.Conn, error)
	// BorrowFunc, if set, lends a server connection for a route without
	// blocking (pool.Pool.BorrowFunc): an idle one at once, preferring one
	// whose pool.Home's Owner is owner, or, with queued, later through fn.
	// With neither, the event loop calls Borrow off the loop. now is the
	// loop's clock; memo is the session's, for BorrowFunc to keep.
	BorrowFunc func(u *User, database string, r session.Route, owner any, now time.Time, memo *PoolMemo, fn func(*pool.Conn, error)) (c *pool.Conn, queued bool)
	// CountPin, if set, is called once per session and pin reason.
	CountPin func(reason string)
	// IdleInTransactionTimeout ends a client that holds a server connection
	// inside a transaction and sends nothing for that long (25P03); 0 is off.
	IdleInTransactionTimeout time.Duration
	// QueryTimeout cancels a request the server has not answered within it
	// (57014); 0 is off.
	QueryTimeout time.Duration
	// Rekey, if set, is told when the key given to the client differs from
	// the one the session was created with (session mode: the server's
	// process ID).
	Rekey func(s *Session, old, new session.Key)
	// Loops, if set, runs plaintext sessions on event loops once they
	// have logged in (the event-loop engine); else they stay on their
	// goroutine.
	Loops Loops
	// StartSession, if set, is asked once the client has authenticated,
	// before its login is answered (the filters' session-start hook): an
	// error refuses the session (the client receives it); a Policy, if not
	// nil, decides this session's statements in place of Session.Policy,
	// and is closed at the session's end when it implements io.Closer (the
	// session-end hook).
	StartSession func(a SessionAttrs) (session.Policy, error)
}

// SessionRouter is a Policy that chose where its session's connections
// come from by default (a filter that picked the session's cluster): the
// session's pool, and the default of every route, is SessionRoute's.
type SessionRouter interface {
	SessionRoute() session.Route
}

// A PoolMemo is where a session's last borrow for a route went and what
// that choice rested on, so that Env.BorrowFunc can skip the lookup while
// nothing it rested on changed. The Env fills it in and reads it; the
// engine only keeps it, one per session.
type PoolMemo struct {
	Route session.Route
	Pool  *pool.Pool
	// Stamp is what the choice rested on (for the proxy: the topology
	// cluster, its snapshot and the configuration), compared by identity.
	Stamp [3]any
}

// SessionAttrs describe an authenticated client for StartSession.
type SessionAttrs struct {
	User, Database, ApplicationName string
	// ClientAddr is the client's address, host:port.
	ClientAddr string
	// TLS reports a client connection encrypted with TLS.
	TLS bool
}

// Session is one client connection. Create it with New and run it with
// Serve; Kill, Close, Cancel, Info and IdleSince may be called from other
// goroutines, and none of them blocks on I/O.
type Session struct {
	id      uint64
	conn    net.Conn
	startup *wire.Startup
	env     *Env
	// log is the proxy's logger; logAt adds the session's fields, which
	// an idle session does not keep encoded.
	log    *zap.Logger
	client string // the client's address, host:port
	cr     *wire.Reader
	cw     *wire.Writer
	m      *session.Machine
	// endPolicy is the session's own policy (StartSession), closed at its end.
	endPolicy io.Closer
	// ownPolicy: StartSession gave the session a policy of its own (the
	// filters'), which the event loop asks off the loop.
	ownPolicy bool

	user     *User
	database string
	pool     *pool.Pool
	srv      *pool.Conn // the held server connection (session goroutine only)

	big       []byte    // a whole message longer than the read buffer
	clientDL  time.Time // the client read deadline last set
	dlUnknown bool      // someone else may have moved the client deadline
	queryDL   time.Time // when the requests in flight time out; zero when none
	srvDL     bool      // a read deadline other than queryDL is set on srv (clean-up)
	cancelled bool      // a query_timeout cancel was sent for them
	pinBits   uint32    // the machine's pins as last published
	// serverSpoke: the watcher saw the server send while the client was
	// awaited.
	serverSpoke bool
	// reqStart is when (since born) the client request the server is
	// answering now was forwarded, or the previous one answered; zero when
	// none is owed. A monotonic reading is cheaper than time.Now.
	reqStart time.Duration
	born     time.Time // when New made the session
	// failure says why the login failed, once Serve has returned.
	failure LoginFailure
	// onEnd, if set, runs once the session has ended (on either engine).
	onEnd func()
	// lp is the session's event-loop side once it was handed to a loop
	// (loop only); onLoop is that loop, for other goroutines.
	lp     *loopSession
	onLoop atomic.Pointer[evloop.Loop]

	lastActive atomic.Int64 // unix nanoseconds of the last client message
	inTx       atomic.Bool  // the held connection's last ReadyForQuery was not 'I'
	killErr    atomic.Pointer[wire.Error]
	closed     atomic.Bool

	mu   sync.Mutex // guards the fields below; never held across I/O
	key  session.Key
	held *pool.Conn // what Cancel may reach
	info Info
}

// Info describes the session for the admin API, metrics and tests.
type Info struct {
	User, Database string
	Pinned         []string
	Holds          bool
	// Server is the pool of the held connection, or nil.
	Server *pool.Pool
	// InTransaction: the held connection is inside a transaction block
	// (its last ReadyForQuery for the client said 'T' or 'E').
	InTransaction bool
}

// New returns a session for a client that has sent startup on conn (which
// is already TLS-wrapped if negotiated). It takes ownership of conn.
func New(id uint64, conn net.Conn, startup *wire.Startup, key session.Key, env *Env, log *zap.Logger) *Session {
	s := &Session{
		id:      id,
		conn:    conn,
		startup: startup,
		env:     env,
		key:     key,
		cr:      newReader(conn),
		cw:      newWriter(conn),
		m:       session.New(env.Session, key),
		born:    time.Now(),
	}
	s.log, s.client = log, conn.RemoteAddr().String()
	s.m.OnPin = func(reason string) {
		s.logAt(zapcore.InfoLevel, "session pinned", zap.String("reason", reason))
		if env.CountPin != nil {
			env.CountPin(reason)
		}
	}
	s.lastActive.Store(time.Now().UnixNano())
	return s
}

// Client readers and writers (16 KiB buffers each) are reused: a session
// handed to a loop gives them back after its login, so that a crowd of
// logins does not leave 32 KiB of garbage per client.
var readers, writers sync.Pool

func newReader(r io.Reader) *wire.Reader {
	if cr, ok := readers.Get().(*wire.Reader); ok {
		cr.Reset(r)
		return cr
	}
	return wire.NewReader(r)
}

func newWriter(w io.Writer) *wire.Writer {
	if cw, ok := writers.Get().(*wire.Writer); ok {
		cw.Reset(w)
		return cw
	}
	return wire.NewWriter(w)
}

// putReaderWriter gives back a reader and writer nothing uses any more:
// the reader's buffered input was taken, the writer's flushed.
func putReaderWriter(cr *wire.Reader, cw *wire.Writer) {
	cr.Reset(nil)
	cw.Reset(nil)
	readers.Put(cr)
	writers.Put(cw)
}

// logAt logs msg at lvl with the session's number, client address and,
// once known, user and database, built only when lvl is enabled.
func (s *Session) logAt(lvl zapcore.Level, msg string, fields ...zap.Field) {
	ce := s.log.Check(lvl, msg)
	if ce == nil {
		return
	}
	all := make([]zap.Field, 0, 4+len(fields))
	all = append(all, zap.Uint64("session", s.id), zap.String("client", s.client))
	if s.database != "" {
		all = append(all, zap.String("user", s.info.User), zap.String("database", s.database))
	}
	ce.Write(append(all, fields...)...)
}

// ID returns the session's number, unique within the proxy.
func (s *Session) ID() uint64 { return s.id }

// Key returns the BackendKeyData given to the client (in session mode, once
// logged in, with the server's process ID).
func (s *Session) Key() session.Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key
}

// Info returns a snapshot of the session.
func (s *Session) Info() Info {
	s.mu.Lock()
	in := s.info
	s.mu.Unlock()
	in.InTransaction = in.Holds && s.inTx.Load()
	return in
}

// IdleSince returns when the client last sent a message, and whether it
// holds no server connection now.
func (s *Session) IdleSince() (time.Time, bool) {
	s.mu.Lock()
	idle := s.held == nil
	s.mu.Unlock()
	return time.Unix(0, s.lastActive.Load()), idle
}

// Kill ends the session with err as soon as it holds no server connection:
// at once if it is idle, else at the end of its transaction. The first
// error wins.
func (s *Session) Kill(err *wire.Error) {
	s.killErr.CompareAndSwap(nil, err)
	if l := s.onLoop.Load(); l != nil {
		l.Post(func() { s.onLoopWake(false) })
		return
	}
	s.wake(false)
}

// onLoopWake is wake posted to the loop the session was on: it finds the
// session there, or gone from it to a goroutine (loopLeave).
func (s *Session) onLoopWake(all bool) {
	if s.lp != nil {
		s.loopRun()
		return
	}
	s.wake(all)
}

// wake makes the goroutine of the session look at its kill and close
// flags by failing its client reads (all: its server's too). It never
// writes.
func (s *Session) wake(all bool) {
	s.mu.Lock()
	conn, srv := s.conn, s.held
	s.mu.Unlock()
	if conn == nil {
		return // handed to a loop meanwhile, which sees the flags
	}
	if !all {
		conn.SetReadDeadline(time.Now()) // wakes a client read
		return
	}
	conn.SetDeadline(time.Now())
	if srv != nil {
		srv.SetReadDeadline(time.Now())
	}
}

// OnEnd sets f to run once the session has ended, whichever engine ran
// it. Call it before Serve.
func (s *Session) OnEnd(f func()) { s.onEnd = f }

// Close ends the session at once, whatever it is doing: its reads and
// writes fail and Serve cleans up. It never writes (a TLS close_notify to a
// client that reads nothing could block).
func (s *Session) Close() {
	s.closed.Store(true)
	s.killErr.CompareAndSwap(nil, wire.Fatalf(wire.CodeAdminShutdown, "terminating connection due to administrator command"))
	if l := s.onLoop.Load(); l != nil {
		l.Post(func() { s.onLoopWake(true) })
		return
	}
	s.wake(true)
}

// ErrNothingToCancel is returned by Cancel when the session holds no
// server connection: it runs nothing a cancel could stop.
var ErrNothingToCancel = errors.New("the session holds no server connection")

// Cancel forwards a cancel request to the server connection the client
// holds at this moment, if any, and returns ErrNothingToCancel when there
// is none, or the error of sending it (pool.ErrCancel). The connection is
// marked so that it is closed rather than reused: a late cancel can never
// reach another client's query.
func (s *Session) Cancel(ctx context.Context) error {
	s.mu.Lock()
	srv := s.held
	if srv != nil {
		srv.MarkBroken()
	}
	s.mu.Unlock()
	if srv == nil {
		return ErrNothingToCancel
	}
	return s.cancelServer(ctx, srv)
}

// cancelServer sends a CancelRequest for srv's backend.
func (s *Session) cancelServer(ctx context.Context, srv *pool.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, cancelTimeout)
	defer cancel()
	err := srv.Cancel(ctx)
	if err != nil {
		s.logAt(zapcore.WarnLevel, "forwarding cancel request", zap.Error(err))
	}
	return err
}

// publish refreshes what Info and Cancel see.
func (s *Session) publish() {
	s.mu.Lock()
	s.held = s.srv
	s.info.Holds = s.srv != nil
	s.info.Server = nil
	if s.srv != nil {
		s.info.Server = s.srv.Pool()
	}
	bits := s.m.PinBits()
	if bits != 0 || s.pinBits != 0 {
		s.info.Pinned = s.m.Pinned() // nothing to sort for most sessions
	}
	s.mu.Unlock()
	s.pinBits = bits
}
