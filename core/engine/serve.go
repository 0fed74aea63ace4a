package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
)

const (
	// cancelTimeout bounds forwarding a cancel request.
	cancelTimeout = 5 * time.Second
	// writeGrace bounds the last write to a client being disconnected.
	writeGrace = 2 * time.Second
	// cleanupTimeout bounds the clean-up of a server connection a client left.
	cleanupTimeout = 5 * time.Second
	// midMessageTimeout bounds a client that stops in the middle of a
	// message streamed to a server connection, when
	// idle_in_transaction_timeout does not bound it more tightly.
	midMessageTimeout = 60 * time.Second
	// cancelGrace is how long the server may take to answer after a
	// query_timeout cancel before the connection is given up.
	cancelGrace = 5 * time.Second
	// maxBurst is how many bytes go to the server before the session
	// forwards whatever replies it already has, so that a long pipeline
	// cannot fill both directions' buffers.
	maxBurst = 64 << 10
)

var (
	// errEnded ends a session whose machine has already told the client why.
	errEnded = errors.New("session ended")
	// errClosed ends a session the proxy closed.
	errClosed = errors.New("session closed by the proxy")
	// errClientGone ends a session whose client cannot be written to.
	errClientGone = errors.New("client connection failed")
)

// Serve runs the session until the client disconnects, ctx ends, or the
// proxy kills it. Serve closes the client connection.
func (s *Session) Serve(ctx context.Context) {
	handedOff := false
	defer func() {
		if !handedOff && s.onEnd != nil {
			s.onEnd()
		}
	}()
	err := s.login(ctx)
	if err == nil && s.env.Loops != nil {
		if l := s.env.Loops.Pick(); l != nil && s.handOff(ctx, l) {
			handedOff = true
			return // the loop serves the client from now on, and ends it
		}
	}
	if err != nil {
		s.failure = loginFailure(err)
	}
	s.serveOn(ctx, err)
}

// serveOn relays for the session on its goroutine unless err (from login)
// already ended it, then ends it.
func (s *Session) serveOn(ctx context.Context, err error) {
	defer func() {
		putReaderWriter(s.cr, s.cw)
		s.cr, s.cw = nil, nil
	}()
	defer s.conn.Close()
	defer func() {
		if s.endPolicy != nil {
			s.endPolicy.Close()
		}
	}()
	if err == nil {
		err = s.relay(ctx)
	}
	if s.srv != nil {
		s.perform(ctx, s.m.ClientGone(), 0, 0, false, fromNobody)
		s.drain(ctx)
	}
	s.publish()
	if we := s.logEnd(err); we != nil {
		s.conn.SetWriteDeadline(time.Now().Add(writeGrace))
		s.cw.WriteMessage(we.Encode(nil))
	}
}

// logEnd logs why the session ended (err) and returns the error the client
// is still to be told, if any.
func (s *Session) logEnd(err error) *wire.Error {
	var we *wire.Error
	switch {
	case err == nil || errors.Is(err, errEnded) && !errors.As(err, &we):
		s.logAt(zapcore.DebugLevel, "client disconnected")
	case isDisconnect(err) || errors.Is(err, errClosed) || errors.Is(err, errClientGone) || errors.Is(err, errPeerEOF):
		s.logAt(zapcore.DebugLevel, "client connection ended", zap.Error(err))
	case errors.Is(err, errEnded):
		s.logAt(zapcore.InfoLevel, "session ended", zap.String("sqlstate", we.Code), zap.Error(we))
	default:
		we = wire.AsError(err)
		if we.Code == wire.CodeInternalError {
			s.logAt(zapcore.ErrorLevel, "session failed", zap.Error(err))
		} else {
			s.logAt(zapcore.InfoLevel, "session ended", zap.String("sqlstate", we.Code), zap.Error(err))
		}
		return we
	}
	return nil
}

// drain reads the server until the machine releases the connection of a
// client that left, within cleanupTimeout.
func (s *Session) drain(ctx context.Context) {
	if s.srv != nil {
		s.srv.SetReadDeadline(time.Now().Add(cleanupTimeout))
		s.srvDL = true
	}
	for s.srv != nil {
		if err := s.serveServer(ctx); err != nil && s.srv != nil {
			s.release(ctx, session.ReleaseDiscard, false)
		}
	}
}

// isDisconnect reports errors that mean the client went away.
func isDisconnect(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &ne) && !errors.Is(err, os.ErrDeadlineExceeded))
}

// transport adapts the client side of a session to auth.Transport.
type transport struct{ s *Session }

func (t transport) ReadMessage() (byte, []byte, error) { return t.s.cr.ReadMessage() }
func (t transport) WriteMessage(b []byte) error        { return t.s.cw.WriteMessage(b) }

// login authenticates the client and lets the machine answer it, from the
// pool's cached server parameters when it can.
func (s *Session) login(ctx context.Context) error {
	st := s.startup
	userName, _ := st.Get("user")
	if userName == "" {
		return wire.Fatalf(wire.CodeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	database, ok := st.Get("database")
	if !ok || database == "" {
		database = userName
	}
	s.mu.Lock()
	s.info.User, s.info.Database = userName, database
	s.mu.Unlock()
	s.database = database

	params, unknownOpts, err := session.StartupParams(st)
	if err != nil {
		return err
	}
	if st.ProtocolMinor > 0 || len(unknownOpts) > 0 {
		if err := s.cw.WriteMessage(wire.AppendNegotiateProtocolVersion(nil, 0, unknownOpts)); err != nil {
			return err
		}
	}
	u := s.env.LookupUser(userName)
	var secret *auth.Secret
	if u != nil {
		secret = u.Secret
	}
	err = auth.AuthenticateClient(transport{s}, s.env.AuthMethod, userName, secret)
	if err == nil && u == nil {
		// trust: the user is still unknown, and Sluice has no credentials for it.
		err = auth.ErrAuthFailed
	}
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrProtocol):
		return wire.Fatalf(wire.CodeProtocolViolation, "invalid authentication message").Wrap(err)
	case isDisconnect(err):
		return err
	default:
		return wire.Fatalf(wire.CodeInvalidPassword, "password authentication failed for user %q", userName).Wrap(err)
	}
	s.user = u
	// The startup deadline the proxy set covers authentication only.
	s.conn.SetDeadline(time.Time{})
	s.dlUnknown = true

	var route session.Route // where the session's connections come from
	if s.env.StartSession != nil {
		a := SessionAttrs{User: userName, Database: database, ClientAddr: s.client}
		_, a.TLS = s.conn.(*tls.Conn)
		for _, p := range params {
			if p.Name == "application_name" {
				a.ApplicationName = p.Value
			}
		}
		pol, err := s.env.StartSession(a)
		if err != nil {
			return fatal(err)
		}
		if pol != nil {
			s.m.SetPolicy(pol)
			s.ownPolicy = true
			if c, ok := pol.(io.Closer); ok {
				s.endPolicy = c
			}
			if r, ok := pol.(SessionRouter); ok {
				route = r.SessionRoute()
			}
		}
	}

	p, err := s.env.Pool(ctx, u, database, route)
	if err != nil {
		return err
	}
	s.pool = p
	defaults, err := p.Defaults(ctx)
	if err != nil {
		return fatal(borrowError(ctx, err))
	}
	step := s.m.Login(params, defaults, p)
	if step.Need == session.NeedServer {
		srv, err := p.Borrow(ctx)
		if err != nil {
			return fatal(borrowError(ctx, err))
		}
		if err := s.attach(srv); err != nil {
			return fatal(borrowError(ctx, err))
		}
		if err := s.perform(ctx, s.m.Attach(&srv.ServerState), 0, 0, false, fromNobody); err != nil {
			return err
		}
		for s.m.LoggingIn() {
			if err := s.serveServer(ctx); err != nil {
				return err
			}
		}
	} else if err := s.perform(ctx, step, 0, 0, false, fromNobody); err != nil {
		return err
	}
	if key := s.m.Key(); key != s.Key() {
		s.mu.Lock()
		old := s.key
		s.key = key
		s.mu.Unlock()
		if s.env.Rekey != nil {
			s.env.Rekey(s, old, key)
		}
	}
	s.publish()
	s.startup = nil
	s.logAt(zapcore.InfoLevel, "client logged in")
	if err := s.cw.Flush(); err != nil {
		return err
	}
	return nil
}

// fatal makes an error that ends a login FATAL.
func fatal(err error) error {
	var we *wire.Error
	if errors.As(err, &we) && !we.Fatal() {
		c := *we
		c.Severity = wire.SeverityFatal
		return &c
	}
	return err
}

// borrowError turns a failed borrow into what the client is told.
func borrowError(ctx context.Context, err error) *wire.Error {
	var we *wire.Error
	switch {
	case errors.Is(err, pool.ErrClosed) || ctx.Err() != nil:
		return wire.Fatalf(wire.CodeAdminShutdown, "terminating connection due to administrator command").Wrap(err)
	case errors.As(err, &we):
		return we
	}
	return wire.Errorf(wire.CodeConnectionFailure, "sluice could not connect to the database server").Wrap(err)
}

// attach makes srv the held connection. A connection an event loop used
// comes back to Go's poller first.
func (s *Session) attach(srv *pool.Conn) error {
	if err := leaveLoop(srv); err != nil {
		srv.Pool().Discard(srv)
		return err
	}
	s.srv = srv
	s.queryDL, s.cancelled = time.Time{}, false
	s.reqStart = 0
	if s.inTx.Load() {
		s.inTx.Store(false)
	}
	s.publish()
	return nil
}

// relay serves the client until it leaves or the session ends.
func (s *Session) relay(ctx context.Context) error {
	burst := 0
	for {
		if s.closed.Load() {
			return errClosed
		}
		if k := s.killErr.Load(); k != nil && s.killable() {
			return k
		}
		if s.srv != nil {
			exp := s.m.Expect()
			if s.srv.R.Buffered() > 0 || s.serverSpoke || exp == session.ExpectReplies && s.cr.Buffered() < wire.HeaderLen {
				burst, s.serverSpoke = 0, false
				if err := s.serveServer(ctx); err != nil {
					return err
				}
				continue
			}
			if burst > maxBurst && exp != session.ExpectNothing {
				// A long pipeline: forward what the server has answered so
				// far before sending more, so that neither side blocks.
				burst = 0
				if err := s.srv.W.Flush(); err != nil {
					if err := s.perform(ctx, s.m.ServerGone(err), 0, 0, false, fromNobody); err != nil {
						return err
					}
					continue
				}
				for s.srv != nil && s.srv.Readable() {
					if err := s.serveServer(ctx); err != nil {
						return err
					}
				}
				continue
			}
		}
		n, err := s.serveClient(ctx)
		if err != nil {
			return err
		}
		burst += n
	}
}

// killable reports whether a kill may end the session now: it holds no
// server connection, or holds one between transactions with nothing owed.
func (s *Session) killable() bool {
	return s.srv == nil || (!s.m.InTransaction() && s.m.Expect() != session.ExpectReplies)
}

// flushBoth writes what is buffered for either peer.
func (s *Session) flushBoth(ctx context.Context) error {
	if s.srv != nil && s.srv.W.Buffered() > 0 {
		if err := s.srv.W.Flush(); err != nil {
			return s.perform(ctx, s.m.ServerGone(err), 0, 0, false, fromNobody)
		}
	}
	if s.cw.Buffered() > 0 {
		if err := s.cw.Flush(); err != nil {
			return errClientGone
		}
	}
	return nil
}
