package session

import (
	"bytes"
	"context"
	"errors"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// maxClassified is the longest Query or Parse body whose SQL is
// classified; it fits the read buffer, so nothing is copied to inspect it.
const maxClassified = 16<<10 - wire.HeaderLen

// maxInlineBurst is how many bytes the client loop writes to the server in
// one go before it makes sure a server reader runs concurrently.
const maxInlineBurst = 64 << 10

// writeGrace bounds the last writes to a client that is being disconnected,
// and resetTimeout the clean-up of a server connection a client left.
const (
	writeGrace   = 2 * time.Second
	resetTimeout = 5 * time.Second
)

func timeNowPlus(d time.Duration) time.Time { return time.Now().Add(d) }

// errQuiet ends a session without a further error: the client has already
// received the server's FATAL.
var errQuiet = errors.New("server connection ended after a FATAL error")

// relay is the client loop: it reads client messages, borrows a server
// connection when one is needed and forwards the messages to it.
func (s *Session) relay(ctx context.Context) error {
	discarding := false // after a failed borrow in an extended-protocol batch: skip to Sync
	burst := 0          // bytes written to the server since the client loop last waited
	for {
		typ, n, err := s.cr.PeekHeader()
		if err != nil {
			return s.readFailed(err)
		}
		s.lastActive.Store(time.Now().UnixNano())
		switch typ {
		case wire.MsgTerminate:
			return nil
		case wire.MsgQuery, wire.MsgParse, wire.MsgBind, wire.MsgDescribe, wire.MsgExecute, wire.MsgClose,
			wire.MsgSync, wire.MsgFlush, wire.MsgFunctionCall, wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
		default:
			return wire.Fatalf(wire.CodeProtocolViolation, "invalid frontend message type %d", typ)
		}
		if discarding {
			if err := s.cr.Skip(n); err != nil {
				return err
			}
			if typ == wire.MsgSync {
				discarding = false
				if err := s.cw.WriteMessage(wire.AppendReadyForQuery(nil, wire.TxIdle)); err != nil {
					return err
				}
			}
			continue
		}
		if typ == wire.MsgQuery {
			if handled, err := s.deallocateLocally(n); err != nil {
				return err
			} else if handled {
				continue
			}
		}
		srv, local, err := s.acquire(ctx, typ)
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Fatal() {
				return err
			}
			// Answer as PostgreSQL answers a failed statement; the session goes on.
			if err := s.cr.Skip(n); err != nil {
				return err
			}
			out := we.Encode(nil)
			switch typ {
			case wire.MsgQuery, wire.MsgFunctionCall, wire.MsgSync:
				out = wire.AppendReadyForQuery(out, wire.TxIdle)
			default:
				discarding = true
			}
			if err := s.cw.WriteMessage(out); err != nil {
				return err
			}
			continue
		}
		if local {
			if err := s.answerLocally(typ, n); err != nil {
				return err
			}
			continue
		}
		if s.cr.Buffered() < wire.HeaderLen+n {
			// The rest of this message is still on its way: let the server
			// work on what came before it meanwhile.
			if err := srv.W.Flush(); err != nil {
				return s.serverWriteFailed(srv, err)
			}
		}
		if typ == wire.MsgQuery || typ == wire.MsgParse {
			// After acquire: effects recorded now belong to this statement,
			// not to what the connection did before it.
			if err := s.classify(typ, n); err != nil {
				return err
			}
		}
		done := false
		switch typ {
		case wire.MsgParse, wire.MsgBind, wire.MsgDescribe, wire.MsgClose:
			if s.rewriting() {
				var swe serverWriteError
				if done, err = s.forwardRewritten(srv, typ, n); errors.As(err, &swe) {
					return s.serverWriteFailed(srv, err)
				} else if err != nil {
					return err
				}
			}
		}
		if !done {
			if err := s.cr.Forward(srv.W, n); err != nil {
				if errors.Is(err, wire.ErrWrite) {
					return s.serverWriteFailed(srv, err)
				}
				return err // the client went away mid-message; cleanup discards srv
			}
		}
		if burst += wire.HeaderLen + n; burst > maxInlineBurst {
			// A long pipeline or COPY: read replies concurrently, or the
			// server could block writing them while we block writing to it.
			s.ensureReader()
		}
		if s.cr.Buffered() < wire.HeaderLen {
			if err := srv.W.Flush(); err != nil {
				return s.serverWriteFailed(srv, err)
			}
			burst = 0
			s.endWrite()
		}
	}
}

// answerLocally handles a message that needs no server connection when the
// client holds none, as PostgreSQL would answer it: Sync gets
// ReadyForQuery; Flush and stray COPY messages are ignored.
func (s *Session) answerLocally(typ byte, n int) error {
	if err := s.cr.Skip(n); err != nil {
		return err
	}
	if typ == wire.MsgSync {
		return s.cw.WriteMessage(wire.AppendReadyForQuery(nil, wire.TxIdle))
	}
	return nil
}

// acquire returns the server connection for the next client message,
// borrowing one if the client holds none, and accounts for the message. It
// reports local when the message is answered without a server.
func (s *Session) acquire(ctx context.Context, typ byte) (srv *pool.Conn, local bool, err error) {
	s.mu.Lock()
	if s.server == nil {
		if k := s.killErr; k != nil {
			s.mu.Unlock()
			if k.Code == "" {
				return nil, false, errQuiet
			}
			return nil, false, k
		}
		s.mu.Unlock()
		switch typ {
		case wire.MsgSync, wire.MsgFlush, wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
			return nil, true, nil
		}
		if err := s.attach(ctx); err != nil {
			return nil, false, err
		}
		s.mu.Lock()
	}
	for s.refreshing != nil {
		// The server reader is reading back parameters on the connection.
		ch := s.refreshing
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
		if s.server == nil {
			s.mu.Unlock()
			return s.acquire(ctx, typ)
		}
	}
	srv = s.server
	if len(srv.PendingClose) > 0 && s.inflight == 0 && !s.batch && s.rewriting() {
		if err := s.closePendingLocked(srv); err != nil {
			s.mu.Unlock()
			return nil, false, s.serverWriteFailed(srv, err)
		}
	}
	if s.refresh && s.reader == nil && !s.writing && s.inflight == 0 && !s.batch && s.txStatus == wire.TxIdle {
		s.mu.Unlock()
		if err := s.refreshParams(srv); err != nil {
			return nil, false, s.serverWriteFailed(srv, err)
		}
		s.mu.Lock()
	}
	switch typ {
	case wire.MsgQuery, wire.MsgSync, wire.MsgFunctionCall:
		s.inflight++
		s.batch = false
		if s.rewriting() {
			s.pushReplyLocked(reply{kind: replySync})
			if typ == wire.MsgQuery {
				// A simple Query destroys the unnamed statement.
				s.unnamed = nil
				srv.UnnamedKey = ""
			}
		}
	case wire.MsgParse, wire.MsgBind, wire.MsgDescribe, wire.MsgExecute, wire.MsgClose:
		s.batch = true
	}
	s.writing = true
	s.mu.Unlock()
	return srv, false, nil
}

// attach borrows a server connection and brings its parameters in line
// with the client's.
func (s *Session) attach(ctx context.Context) error {
	srv, err := s.pool.Borrow(ctx)
	if err != nil {
		if errors.Is(err, pool.ErrClosed) || ctx.Err() != nil {
			return wire.Fatalf(wire.CodeAdminShutdown, "terminating connection due to administrator command").Wrap(err)
		}
		return err
	}
	if err := s.syncParams(srv); err != nil {
		s.giveBack(srv, err)
		var we *wire.Error
		if errors.As(err, &we) {
			return err
		}
		return wire.Errorf(wire.CodeConnectionFailure, "server connection failed while applying session parameters").Wrap(err)
	}
	s.mu.Lock()
	s.server = srv
	s.txStatus = wire.TxIdle
	s.inflight = 0
	s.batch = false
	s.mu.Unlock()
	return nil
}

// endWrite ends a burst of client messages, when the client loop would
// otherwise wait for the client. If the connection reached the safe
// transfer point it goes back to the pool. If the client now waits for the
// answer to a complete request, the client loop reads the replies itself
// (inline): no other goroutine is woken on the common path. Otherwise a
// server reader goroutine forwards what the server sends while the client
// loop waits for the client: replies to a Flush, COPY, or notifications of a
// pinned client.
func (s *Session) endWrite() {
	s.mu.Lock()
	s.writing = false
	srv := s.server
	if srv == nil || s.reader != nil {
		s.mu.Unlock()
		return
	}
	if s.canDetachLocked() {
		s.detachLocked()
		s.mu.Unlock()
		s.pool.Return(srv)
		return
	}
	if s.refreshDueLocked() {
		s.mu.Unlock()
		s.refreshAndDetach(srv)
		return
	}
	if s.inflight == 0 || s.batch {
		if s.batch || s.txStatus == wire.TxIdle {
			s.startReaderLocked()
		}
		// Else the client is inside a transaction with nothing pending:
		// the server has nothing to say until the client speaks.
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.serveReplies(srv, true)
}

// ensureReader starts a server reader if none runs.
func (s *Session) ensureReader() {
	s.mu.Lock()
	if s.server != nil && s.reader == nil {
		s.startReaderLocked()
	}
	s.mu.Unlock()
}

// canDetachLocked reports whether the held connection is at a safe
// transfer point and may go back to the pool.
func (s *Session) canDetachLocked() bool {
	return s.env.Mode == ModeTransaction && s.pins == 0 && !s.refresh && !s.gone &&
		s.inflight == 0 && !s.batch && s.txStatus == wire.TxIdle
}

// refreshDueLocked reports whether the connection could go back but for
// tracked parameters that must be read back first.
func (s *Session) refreshDueLocked() bool {
	return s.refresh && s.env.Mode == ModeTransaction && s.pins == 0 && !s.gone &&
		s.inflight == 0 && !s.batch && s.txStatus == wire.TxIdle && !s.writing
}

// refreshAndDetach reads back tracked parameters on srv, which the client
// loop alone uses now, and gives it back unless the client became pinned.
func (s *Session) refreshAndDetach(srv *pool.Conn) {
	if err := s.refreshParams(srv); err != nil {
		s.log.Info("reading back session parameters failed", zap.Error(err))
		s.mu.Lock()
		if s.server == srv {
			s.server = nil
			s.killErr = wire.Fatalf(wire.CodeConnectionFailure, "server connection failed while saving session parameters").Wrap(err)
			s.conn.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		s.pool.Discard(srv)
		return
	}
	s.mu.Lock()
	if s.canDetachLocked() {
		s.detachLocked()
		s.mu.Unlock()
		s.pool.Return(srv)
		return
	}
	s.mu.Unlock()
}

// classify inspects a Query or Parse message before it is forwarded and
// applies the session-state effects of its SQL.
func (s *Session) classify(typ byte, n int) error {
	if n > maxClassified {
		// Too long to inspect cheaply (RDS Proxy pins these too).
		s.mu.Lock()
		s.pinLocked(reasonBit(sqlclass.ReasonUnknown))
		s.mu.Unlock()
		return nil
	}
	body, err := s.cr.PeekBody(n)
	if err != nil {
		return err
	}
	if typ == wire.MsgQuery {
		if i := bytes.IndexByte(body, 0); i >= 0 {
			s.classifyQuery(string(body[:i]))
		}
		return nil
	}
	_, rest, ok := bytes.Cut(body, []byte{0})
	if !ok {
		return nil
	}
	query, _, _ := bytes.Cut(rest, []byte{0})
	if st := sqlclass.ClassifyOne(string(query)); st.Effects != nil {
		s.applyEffects(st.Effects)
	}
	return nil
}

// detachLocked lets go of the held connection; the caller returns it.
func (s *Session) detachLocked() {
	s.server = nil
	if s.killErr != nil {
		s.conn.SetReadDeadline(time.Now())
	}
}

func (s *Session) startReaderLocked() {
	done := make(chan struct{})
	s.reader = done
	srv := s.server
	go func() {
		defer close(done)
		s.serveReplies(srv, false)
	}()
}

// readFailed turns a failed client read into the session's end: the kill
// reason when the proxy woke the loop on purpose.
func (s *Session) readFailed(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.mu.Lock()
		k := s.killErr
		s.mu.Unlock()
		if k != nil {
			if k.Code == "" {
				return errQuiet
			}
			return k
		}
	}
	return err
}

func (s *Session) serverWriteFailed(srv *pool.Conn, err error) error {
	srv.MarkBroken()
	return wire.Fatalf(wire.CodeConnectionFailure, "server closed the connection unexpectedly").Wrap(err)
}

// serveReplies forwards the replies of srv to the client. As the server
// reader goroutine (inline false) it runs until the connection can go back
// to the pool, the client loop must take over, or the server fails. Inline,
// in the client loop, it stops as soon as every request is answered, or
// hands over to a reader goroutine when the server enters COPY mode and
// waits for the client.
func (s *Session) serveReplies(srv *pool.Conn, inline bool) {
	sawFatal := false
	var scratch [256]byte
	for {
		if srv.R.Buffered() == 0 && s.cw.Buffered() > 0 {
			s.cw.Flush() // a failed client write is sticky; the client loop notices the client is gone
		}
		typ, n, err := srv.R.PeekHeader()
		if err != nil {
			s.serverFailed(srv, err, sawFatal, inline)
			return
		}
		switch typ {
		case wire.MsgReadyForQuery:
			_, body, err := srv.R.ReadMessage()
			if err == nil && len(body) != 1 {
				err = wire.ErrBadLength
			}
			if err != nil {
				s.serverFailed(srv, err, sawFatal, inline)
				return
			}
			status := body[0]
			s.cw.Write(wire.AppendReadyForQuery(scratch[:0], status))
			if !inline {
				s.cw.Flush()
			}
			s.mu.Lock()
			s.popReplyLocked()
			if s.inflight > 0 {
				s.inflight--
			}
			s.txStatus = status
			if s.gone {
				s.reader = nil
				s.mu.Unlock()
				return
			}
			if s.canDetachLocked() {
				if !inline {
					s.reader = nil
					if s.writing {
						s.mu.Unlock() // the client loop hands the connection back in endWrite
						return
					}
				}
				s.detachLocked()
				s.mu.Unlock()
				// Hand the connection on before writing to the client: the
				// next borrower need not wait for that system call.
				s.pool.Return(srv)
				if inline {
					s.cw.Flush()
				}
				return
			}
			if inline {
				// Before anything else may write to the client.
				s.cw.Flush()
			}
			if s.refreshDueLocked() {
				var done chan struct{}
				if !inline {
					s.reader = nil
					done = make(chan struct{})
					s.refreshing = done
				}
				s.mu.Unlock()
				s.refreshAndDetach(srv)
				if !inline {
					s.mu.Lock()
					s.refreshing = nil
					close(done)
					if s.server == srv && s.reader == nil && s.inflight == 0 && s.txStatus == wire.TxIdle {
						s.startReaderLocked() // still pinned: watch for notifications
					}
					s.mu.Unlock()
				}
				return
			}
			if inline && s.inflight == 0 {
				if status == wire.TxIdle {
					// Pinned and idle: notifications may come at any time.
					s.startReaderLocked()
				}
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
		case wire.MsgParameterStatus:
			_, body, err := srv.R.ReadMessage()
			if err != nil {
				s.serverFailed(srv, err, sawFatal, inline)
				return
			}
			if name, value, ok := wire.ParseParameterStatus(body); ok {
				srv.Params[name] = value
				s.params[name] = value
				srv.ParamsKey, s.paramsKey = "", ""
			}
			s.cw.Write(wire.AppendMessage(scratch[:0], typ, body))
		case wire.MsgErrorResponse:
			_, body, err := srv.R.ReadMessage()
			if err != nil {
				s.serverFailed(srv, err, sawFatal, inline)
				return
			}
			if pool.DecodeError(body).Fatal() {
				sawFatal = true
			}
			s.cw.Write(wire.AppendMessage(scratch[:0], typ, body))
			s.mu.Lock()
			s.skipToSyncLocked(srv)
			s.mu.Unlock()
		case wire.MsgParseComplete, wire.MsgCloseComplete:
			if err := srv.R.Skip(n); err != nil {
				s.serverFailed(srv, err, sawFatal, inline)
				return
			}
			s.mu.Lock()
			r := s.popReplyLocked()
			s.mu.Unlock()
			switch {
			case r.kind == replyParseSwallow || r.kind == replyCloseSwallow:
			case r.kind == replyCloseAsParse:
				s.cw.Write(append(scratch[:0], wire.MsgParseComplete, 0, 0, 0, 4))
			default:
				s.cw.Write(append(scratch[:0], typ, 0, 0, 0, 4))
			}
		case wire.MsgCopyInResponse, wire.MsgCopyBothResponse:
			if err := srv.R.Forward(s.cw, n); err != nil && !errors.Is(err, wire.ErrWrite) {
				s.serverFailed(srv, err, sawFatal, inline)
				return
			}
			if inline {
				// The server now waits for the client's data: the client
				// loop must read the client while a reader watches the server.
				s.cw.Flush()
				s.mu.Lock()
				s.startReaderLocked()
				s.mu.Unlock()
				return
			}
		default:
			if err := srv.R.Forward(s.cw, n); err != nil && !errors.Is(err, wire.ErrWrite) {
				s.serverFailed(srv, err, sawFatal, inline)
				return
			}
		}
	}
}

// serverFailed handles a server connection that failed under the client:
// the connection is discarded and the client, unless it already left, is
// disconnected with an error (or after the server's own FATAL) as it would
// be by PostgreSQL. A read stopped on purpose by cleanup at a message
// boundary leaves the connection to cleanup instead.
func (s *Session) serverFailed(srv *pool.Conn, err error, sawFatal, inline bool) {
	s.cw.Flush()
	s.mu.Lock()
	if !inline {
		s.reader = nil
	}
	if s.gone && errors.Is(err, os.ErrDeadlineExceeded) && srv.R.Buffered() == 0 {
		s.mu.Unlock()
		return
	}
	if s.server == srv {
		s.server = nil
	}
	if !s.gone {
		if sawFatal {
			s.killErr = &wire.Error{}
		} else {
			s.killErr = wire.Fatalf(wire.CodeConnectionFailure, "server closed the connection unexpectedly").Wrap(err)
		}
		s.conn.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.log.Info("server connection failed", zap.Error(err))
	s.pool.Discard(srv)
}

// cleanup runs when the client loop has ended: it stops the server reader
// and leaves the held connection clean for the next borrower (rolling back
// an open transaction; DISCARD ALL for a pinned or session-mode client), or
// closes it when that cannot be done safely.
func (s *Session) cleanup() {
	s.mu.Lock()
	s.gone = true
	done := s.reader
	srv := s.server
	s.mu.Unlock()
	if srv == nil {
		return
	}
	if done != nil {
		srv.SetReadDeadline(time.Now())
		<-done
	}
	s.mu.Lock()
	srv = s.server
	s.server = nil
	inflight, batch, status, writing := s.inflight, s.batch, s.txStatus, s.writing
	dirty := s.pins != 0 || s.refresh
	s.mu.Unlock()
	if srv == nil {
		return
	}
	srv.SetReadDeadline(time.Time{})
	switch {
	case srv.Broken() || writing:
		s.pool.Discard(srv)
	case inflight > 0:
		// A statement is still running: stop it and drop the connection,
		// which is quicker and safer than waiting for it.
		s.cancelServer(context.Background(), srv)
		s.pool.Discard(srv)
	default:
		if err := resetServer(srv, batch, status, dirty); err != nil {
			s.log.Info("discarding server connection after failed reset", zap.Error(err))
			s.pool.Discard(srv)
			return
		}
		s.pool.Return(srv)
	}
}

// resetServer ends whatever a departed client left open on srv.
func resetServer(srv *pool.Conn, batch bool, status byte, discardAll bool) error {
	srv.SetDeadline(time.Now().Add(resetTimeout))
	defer srv.SetDeadline(time.Time{})
	if batch {
		st, err := srv.Sync()
		if err != nil {
			return err
		}
		status = st
	}
	if status != wire.TxIdle {
		if err := srv.Exec("ROLLBACK"); err != nil {
			return err
		}
	}
	if discardAll {
		if err := srv.Exec("DISCARD ALL"); err != nil {
			return err
		}
		srv.ForgetSetParams()
		srv.Prepared.Clear()
	}
	return nil
}
