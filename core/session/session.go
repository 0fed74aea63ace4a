// Package session serves one client connection: authentication, the
// startup parameters, and the relay of messages between the client and the
// server connection it borrows from a pool.
//
// In transaction mode a client borrows a server connection at the first
// message that needs one and gives it back when the server reports
// ReadyForQuery with status 'I' and nothing the client sent is still
// unanswered: the safe transfer point. In session mode it keeps the
// connection until it disconnects.
//
// Two goroutines serve a session while it holds a server connection: the
// client loop (Serve) reads client messages and writes them to the server;
// the server reader forwards replies to the client and decides, on each
// ReadyForQuery, whether the connection can go back to the pool. Both meet
// under Session.mu.
package session

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// Mode is the pooling mode of a session.
type Mode int

// The pooling modes.
const (
	ModeTransaction Mode = iota
	ModeSession
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
	Mode       Mode
	AuthMethod auth.Method
	// LookupUser returns the configured user of that name, or nil.
	LookupUser func(name string) *User
	// Pool returns the pool for a backend user and database.
	Pool func(u *User, database string) (*pool.Pool, error)
	// Dial opens a connection to a server address, for cancel requests.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Track holds the lower-case names of the parameters whose SET and
	// RESET are tracked and replayed instead of pinning; OnSetPin pins on
	// every SET instead.
	Track    map[string]bool
	OnSetPin bool
	// CountPin, if set, is called once per session and pin reason.
	CountPin func(reason string)
	// MaxPrepared caps the prepared statements kept per server connection.
	MaxPrepared int
}

// Key is the BackendKeyData Sluice gives a client: its own, never a server's.
type Key struct{ ProcessID, SecretKey uint32 }

// Session is one client connection. Create it with New and run it with
// Serve; Kill and Cancel may be called from other goroutines.
type Session struct {
	id      uint64
	conn    net.Conn
	startup *wire.Startup
	key     Key
	env     *Env
	log     *zap.Logger
	cr      *wire.Reader
	cw      *wire.Writer

	user        string
	database    string
	pool        *pool.Pool
	startParams map[string]string    // the client's parameters right after login
	stmts       []sqlclass.Statement // reused by classifyQuery
	prepared    map[string]*stmtDef  // the client's named prepared statements (transaction mode), under mu
	unnamed     *stmtDef             // the client's unnamed statement, under mu
	out         []byte               // reused for rewritten messages
	params      map[string]string    // the client's parameter values, canonical after login
	paramsKey   string               // fingerprint of params; "" when it must be recomputed

	lastActive atomic.Int64 // unix nanoseconds of the last client message

	mu         sync.Mutex
	server     *pool.Conn      // held server connection, or nil
	reader     chan struct{}   // closed when the running server reader exits; nil if none runs
	inflight   int             // Query, Sync and FunctionCall messages not yet answered by ReadyForQuery
	batch      bool            // extended-protocol messages sent since the last Sync
	txStatus   byte            // last ReadyForQuery status from the held server
	writing    bool            // the client loop is writing to the server
	pins       pinSet          // why the client keeps its server connection
	pinLogged  pinSet          // reasons already logged and counted
	dirty      map[string]bool // tracked parameters set since they were last read back
	resetAll   bool            // RESET ALL or DISCARD ALL ran since then
	refresh    bool            // dirty or resetAll: read back before the connection goes back
	gone       bool            // the client loop has ended
	killErr    *wire.Error     // why the proxy is ending the session
	replies    []reply         // replies the server owes for rewritten messages, in order
	replyHead  int
	refreshing chan struct{} // closed when the server reader has read back parameters
}

// New returns a session for a client that has sent startup on conn (which
// is already TLS-wrapped if negotiated). It takes ownership of conn.
func New(id uint64, conn net.Conn, startup *wire.Startup, key Key, env *Env, log *zap.Logger) *Session {
	s := &Session{
		id:       id,
		conn:     conn,
		startup:  startup,
		key:      key,
		env:      env,
		cr:       wire.NewReader(conn),
		cw:       wire.NewWriter(conn),
		txStatus: wire.TxIdle,
	}
	s.log = log.With(zap.Uint64("session", id), zap.String("client", conn.RemoteAddr().String()))
	s.lastActive.Store(time.Now().UnixNano())
	return s
}

// ID returns the session's number, unique within the proxy.
func (s *Session) ID() uint64 { return s.id }

// Key returns the BackendKeyData given to the client.
func (s *Session) Key() Key { return s.key }

// IdleSince returns when the client last sent a message, and whether it
// holds no server connection now.
func (s *Session) IdleSince() (time.Time, bool) {
	s.mu.Lock()
	idle := s.server == nil
	s.mu.Unlock()
	return time.Unix(0, s.lastActive.Load()), idle
}

// Kill ends the session with err as soon as it holds no server connection:
// at once if it is idle, else at the end of its transaction. Safe for
// concurrent use; the first error wins.
func (s *Session) Kill(err *wire.Error) {
	s.mu.Lock()
	if s.killErr == nil {
		s.killErr = err
	}
	if s.server == nil {
		s.conn.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
}

// Close closes the client connection at once, whatever the session is
// doing, and interrupts a wait for the server; Serve then cleans up.
func (s *Session) Close() {
	s.mu.Lock()
	if s.server != nil {
		s.server.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.conn.Close()
}

// Cancel forwards a cancel request to the server connection the client
// holds at this moment, if any. The connection is marked so that it is
// closed rather than reused, so that a late cancel can never reach another
// client's query.
func (s *Session) Cancel(ctx context.Context) {
	s.mu.Lock()
	srv := s.server
	if srv != nil {
		srv.MarkBroken()
	}
	s.mu.Unlock()
	if srv == nil {
		return
	}
	s.cancelServer(ctx, srv)
}

// cancelServer sends a CancelRequest for srv's backend.
func (s *Session) cancelServer(ctx context.Context, srv *pool.Conn) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := s.env.Dial(ctx, srv.Addr())
	if err != nil {
		s.log.Warn("forwarding cancel request", zap.Error(err))
		return
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write(wire.EncodeCancel(srv.ProcessID, srv.SecretKey)); err != nil {
		s.log.Warn("forwarding cancel request", zap.Error(err))
		return
	}
	// The server closes the connection once it has processed the request.
	var b [1]byte
	c.Read(b[:])
}
