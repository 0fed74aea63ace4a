package engine

import (
	"errors"
	"time"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/wire"
)

// LoginFailure says why Sluice refused a client's login. The zero value
// means the client logged in, or left (or was closed by the proxy) before
// Sluice refused it.
type LoginFailure string

// The reasons a login is refused.
const (
	// LoginBadStartup: the startup packet or the authentication exchange
	// broke the protocol, or asked for something Sluice does not serve (no
	// user name, a replication connection).
	LoginBadStartup LoginFailure = "bad_startup"
	// LoginAuthFailed: a wrong password or an unknown user (28P01).
	LoginAuthFailed LoginFailure = "auth_failed"
	// LoginServerRefused: PostgreSQL refused the login (a database that
	// does not exist, a startup parameter it rejects, too many clients).
	LoginServerRefused LoginFailure = "server_refused"
	// LoginNoServer: no server connection could be had (unreachable, no
	// writer known, the pool's borrow timeout).
	LoginNoServer LoginFailure = "no_server"
	// LoginShuttingDown: the proxy was shutting down.
	LoginShuttingDown LoginFailure = "shutting_down"
)

// LoginFailure returns why the login was refused, or "" when the client
// logged in or left first. It is meaningful once Serve has returned.
func (s *Session) LoginFailure() LoginFailure { return s.failure }

// loginFailure classifies the error that ended a login.
func loginFailure(err error) LoginFailure {
	var we *wire.Error
	switch {
	case err == nil || isDisconnect(err) || errors.Is(err, errClientGone):
		return ""
	case errors.Is(err, errClosed):
		return LoginShuttingDown
	case errors.Is(err, pool.ErrServer):
		return LoginServerRefused
	case !errors.As(err, &we):
		return LoginNoServer
	}
	switch we.Code {
	case wire.CodeInvalidPassword:
		return LoginAuthFailed
	case wire.CodeAdminShutdown:
		return LoginShuttingDown
	case wire.CodeInvalidAuthorization, wire.CodeProtocolViolation, wire.CodeFeatureNotSupported, wire.CodeInvalidParameterValue:
		return LoginBadStartup
	}
	return LoginNoServer
}

// sinceBorn is the session's age: by its loop's clock on a loop.
func (s *Session) sinceBorn() time.Duration {
	if s.lp != nil {
		return s.lp.l.Now().Sub(s.born)
	}
	return time.Since(s.born)
}

// forwarded notes that a client request went to the held server: the
// server's response time runs from the first message of a request.
func (s *Session) forwarded() {
	if s.reqStart == 0 {
		s.reqStart = max(s.sinceBorn(), 1)
	}
}

// answered reports a ReadyForQuery with status that ends a client request
// on srv to its pool's Observer. When more requests are owed (a
// pipeline), the next one's time runs from now.
func (s *Session) answered(srv *pool.Conn, status byte) {
	now := max(s.sinceBorn(), 1)
	took := time.Duration(-1)
	if s.reqStart != 0 {
		took = now - s.reqStart
	}
	srv.Pool().Observer().Served(took, status == wire.TxIdle)
	if inTx := status != wire.TxIdle; s.inTx.Load() != inTx {
		s.inTx.Store(inTx)
	}
	s.reqStart = 0
	if s.m.AwaitsClientRequest() {
		s.reqStart = now
	}
}
