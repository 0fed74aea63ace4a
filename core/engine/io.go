package engine

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
)

// source says whose message a step answers.
type source uint8

const (
	fromNobody source = iota
	fromClient
	fromServer
)

// readBody returns the first k body bytes of the message whose header was
// just peeked on r (body length n): from r's buffer when they fit, else the
// whole message is read into s.big (inHeap), consumed from r.
func (s *Session) readBody(r *wire.Reader, n, k int) (body []byte, inHeap bool, err error) {
	if k == 0 {
		return nil, false, nil
	}
	if wire.HeaderLen+k <= wire.BufferSize {
		body, err = r.PeekBody(k)
		return body, false, err
	}
	total := wire.HeaderLen + n
	if cap(s.big) < total {
		s.big = make([]byte, total)
	}
	s.big = s.big[:total]
	if err := r.ReadFull(s.big); err != nil {
		return nil, false, err
	}
	return s.big[wire.HeaderLen:], true, nil
}

// serveClient reads the next client message, waiting for it, and carries
// out what the machine makes of it. It returns how many bytes went to the
// server.
func (s *Session) serveClient(ctx context.Context) (int, error) {
	var w *watch
	if s.cr.Buffered() < wire.HeaderLen {
		if err := s.flushBoth(ctx); err != nil {
			return 0, err
		}
		if s.srv == nil && s.cr.Buffered() == 0 {
			s.shrink()
		}
		s.setClientDeadline(s.idleDeadline())
		if k := s.killErr.Load(); k != nil && s.killable() {
			return 0, k
		}
		if s.srv != nil && s.m.Expect() == session.ExpectMaybe {
			w = s.startWatch()
		}
	} else if s.dlUnknown {
		// A wake-up moved the deadline while a message was buffered: the
		// rest of the message must not fail on it.
		s.setClientDeadline(s.idleDeadline())
	}
	typ, n, err := s.cr.PeekHeader()
	if w != nil {
		s.stopWatch(w)
	}
	if err != nil {
		return 0, s.clientReadFailed(err, w)
	}
	s.lastActive.Store(time.Now().UnixNano())
	body, inHeap, err := s.readBody(s.cr, n, s.m.ClientNeeds(typ, n))
	if err != nil {
		return 0, s.clientReadFailed(err, nil)
	}
	for {
		st := s.m.Client(typ, n, body)
		switch st.Need {
		case session.NeedServer:
			refused, err := s.borrow(ctx, st.Route, typ, n)
			if err != nil {
				return 0, err
			}
			if refused != nil {
				return 0, s.perform(ctx, *refused, typ, n, inHeap, fromClient)
			}
			continue
		case session.NeedReplies:
			if err := s.serveServer(ctx); err != nil {
				return 0, err
			}
			continue
		case session.NeedDecision:
			s.m.AskPolicy() // this goroutine is the session's own: nobody else waits
			continue
		}
		sent := len(st.ToServer)
		if st.Skip < wire.HeaderLen+n && s.srv != nil && !st.End {
			sent += wire.HeaderLen + n - st.Skip
		}
		if sent > 0 && s.srv != nil {
			s.forwarded()
		}
		return sent, s.perform(ctx, st, typ, n, inHeap, fromClient)
	}
}

// clientReadFailed makes sense of a failed client read: a wake-up (by the
// watcher, a kill, or a deadline of the session's own) or the client's end.
func (s *Session) clientReadFailed(err error, w *watch) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	s.dlUnknown = true
	if s.closed.Load() {
		return errClosed
	}
	if w != nil && w.fired.Load() {
		s.serverSpoke = true // the relay loop serves it
		return nil
	}
	if k := s.killErr.Load(); k != nil && s.killable() {
		return k
	}
	if dl := s.clientDL; !dl.IsZero() && !time.Now().Before(dl) {
		if s.m.InTransaction() {
			return wire.Fatalf(wire.CodeIdleInTransaction, "terminating connection due to idle-in-transaction timeout")
		}
		return wire.Fatalf(wire.CodeProtocolViolation, "client stopped in the middle of a message")
	}
	return nil // a kill to act on later: read on
}

// idleDeadline is the client read deadline while the client is awaited.
func (s *Session) idleDeadline() time.Time {
	if t := s.env.IdleInTransactionTimeout; t > 0 && s.m.InTransaction() {
		return time.Now().Add(t)
	}
	return time.Time{}
}

// setClientDeadline sets the client read deadline when it changes.
func (s *Session) setClientDeadline(t time.Time) {
	if s.dlUnknown || !t.Equal(s.clientDL) {
		s.conn.SetReadDeadline(t)
		s.clientDL = t
		s.dlUnknown = false
	}
}

// shrink drops a large message buffer once it is no longer needed.
func (s *Session) shrink() {
	if cap(s.big) > wire.BufferSize {
		s.big = nil
	}
}

// borrow gets a server connection for route and attaches it. When the
// borrow fails it returns the machine's answer to the message instead.
func (s *Session) borrow(ctx context.Context, route session.Route, typ byte, n int) (*session.Step, error) {
	srv, err := s.env.Borrow(ctx, s.user, s.database, route)
	if err != nil {
		st := s.m.Refuse(typ, n, borrowError(ctx, err))
		return &st, nil
	}
	if err := s.attach(srv); err != nil {
		st := s.m.Refuse(typ, n, borrowError(ctx, err))
		return &st, nil
	}
	return nil, s.perform(ctx, s.m.Attach(&srv.ServerState), 0, 0, false, fromNobody)
}

// serveServer reads the next message of the held connection and carries out
// what the machine makes of it.
func (s *Session) serveServer(ctx context.Context) error {
	srv := s.srv
	if srv.R.Buffered() < wire.HeaderLen {
		if err := s.unstall(ctx); err != nil || s.srv != srv {
			return err
		}
	}
	s.armQueryTimeout()
	typ, n, err := srv.R.PeekHeader()
	if err != nil {
		return s.serverReadFailed(ctx, err)
	}
	if srv.R.Buffered() < wire.HeaderLen+n {
		// The rest of the message may wait in the server's output buffer
		// for more input: the read below must not wait for what the
		// server waits for.
		if err := s.unstall(ctx); err != nil || s.srv != srv {
			return err
		}
	}
	body, inHeap, err := s.readBody(srv.R, n, s.m.ServerNeeds(typ, n))
	if err != nil {
		return s.serverLost(ctx, err)
	}
	answer := typ == wire.MsgReadyForQuery && len(body) == 1 && s.m.AwaitsClientRequest()
	st := s.m.Server(typ, n, body)
	if answer {
		s.answered(srv, body[0])
	}
	return s.perform(ctx, st, typ, n, inHeap, fromServer)
}

// unstall makes sure the server has all it needs to send what it owes
// before the session waits for it: what is buffered for it, and a Flush
// when it may be holding replies back.
func (s *Session) unstall(ctx context.Context) error {
	if f := s.m.Unstall(); f != nil {
		if _, err := s.srv.W.Write(f); err != nil {
			return s.serverLost(ctx, err)
		}
	}
	return s.flushBoth(ctx)
}

// armQueryTimeout keeps the server read deadline in line with query_timeout.
func (s *Session) armQueryTimeout() {
	if s.env.QueryTimeout <= 0 {
		return
	}
	if s.m.AwaitsClientRequest() {
		if s.queryDL.IsZero() {
			s.queryDL = time.Now().Add(s.env.QueryTimeout)
			s.srv.SetReadDeadline(s.queryDL)
		}
	} else if !s.queryDL.IsZero() {
		s.queryDL, s.cancelled = time.Time{}, false
		s.srv.SetReadDeadline(time.Time{})
	}
}

// serverReadFailed handles a failed server read: a query_timeout, a wake-up
// by Close, or the connection's end.
func (s *Session) serverReadFailed(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if s.closed.Load() {
			return errClosed
		}
		if !s.queryDL.IsZero() && !time.Now().Before(s.queryDL) {
			if !s.cancelled {
				// The server answers the cancel with its own 57014; the
				// connection is not reused, as a late cancel could reach
				// the next borrower's query.
				s.cancelled = true
				s.srv.MarkBroken()
				s.cancelServer(ctx, s.srv)
				s.queryDL = time.Now().Add(cancelGrace)
				s.srv.SetReadDeadline(s.queryDL)
				return nil
			}
			return s.perform(ctx, s.m.ServerGone(errors.New("no answer to a query_timeout cancel")), 0, 0, false, fromNobody)
		}
		if s.m.Expect() != session.ExpectReplies {
			s.srv.SetReadDeadline(time.Time{})
			return nil // a stray wake-up
		}
	}
	return s.serverLost(ctx, err)
}

// perform carries out a step answering the current message of from (type
// typ, body length n; inHeap when it was read whole into s.big).
func (s *Session) perform(ctx context.Context, st session.Step, typ byte, n int, inHeap bool, from source) error {
	var clientErr error
	if len(st.ToClient) > 0 {
		if _, err := s.cw.Write(st.ToClient); err != nil {
			clientErr = errClientGone
		}
	}
	srv := s.srv
	if len(st.ToServer) > 0 && srv != nil {
		if _, err := srv.W.Write(st.ToServer); err != nil {
			return s.serverLost(ctx, err)
		}
	}
	if from != fromNobody {
		if err := s.pass(ctx, st, n, inHeap, from, srv); err != nil {
			if errors.Is(err, errClientGone) {
				clientErr = err
			} else {
				return err
			}
		}
	}
	if st.Release != session.Keep {
		s.release(ctx, st.Release, st.Cancel)
	} else if s.m.PinBits() != s.pinBits {
		s.publish()
	}
	if st.End {
		s.cw.Flush()
		if st.Err != nil {
			return errors.Join(errEnded, st.Err)
		}
		return errEnded
	}
	return clientErr
}

// pass forwards the current message, but for its first st.Skip bytes, to
// the other peer, or consumes it.
func (s *Session) pass(ctx context.Context, st session.Step, n int, inHeap bool, from source, srv *pool.Conn) error {
	total := wire.HeaderLen + n
	skip := min(max(st.Skip, 0), total)
	forward := skip < total && !st.End && srv != nil
	r, w := s.cr, (*wire.Writer)(nil)
	if from == fromClient && srv != nil {
		w = srv.W
	} else if from == fromServer {
		r, w = srv.R, s.cw
	}
	if inHeap {
		if forward {
			if _, err := w.Write(s.big[skip:total]); err != nil {
				return s.writeFailed(ctx, from, err)
			}
		}
		return nil
	}
	if !forward {
		if err := r.Discard(total); err != nil {
			return s.readFailed(ctx, from, err)
		}
		return nil
	}
	if err := r.Discard(skip); err != nil {
		return s.readFailed(ctx, from, err)
	}
	streaming := from == fromClient && r.Buffered() < total-skip
	if streaming {
		// The rest of the message is on its way: the server gets what came
		// before it meanwhile, and a client that stops half-way is bounded.
		if err := srv.W.Flush(); err != nil {
			return s.writeFailed(ctx, from, err)
		}
		t := midMessageTimeout
		if it := s.env.IdleInTransactionTimeout; it > 0 && it < t {
			t = it
		}
		s.setClientDeadline(time.Now().Add(t))
	}
	err := r.CopyTo(w, total-skip)
	if streaming {
		s.setClientDeadline(time.Time{})
	}
	if err != nil {
		if errors.Is(err, wire.ErrWrite) {
			return s.writeFailed(ctx, from, err)
		}
		return s.readFailed(ctx, from, err)
	}
	return nil
}

// readFailed handles a failed read in the middle of a message.
func (s *Session) readFailed(ctx context.Context, from source, err error) error {
	if from == fromServer {
		// Part of the message may have reached the client.
		if s.srv != nil {
			s.srv.Pool().Suspect()
		}
		return s.perform(ctx, s.m.ServerBroke(err), 0, 0, false, fromNobody)
	}
	// Half a message went to the server: the connection cannot be reused.
	if s.srv != nil {
		s.release(ctx, session.ReleaseDiscard, false)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return wire.Fatalf(wire.CodeProtocolViolation, "client stopped in the middle of a message")
	}
	return err
}

// writeFailed handles a failed write to the peer of from.
func (s *Session) writeFailed(ctx context.Context, from source, err error) error {
	if from == fromServer {
		return errClientGone
	}
	return s.serverLost(ctx, err)
}

// serverLost handles the failure of the held connection (err from reading
// or writing it). Its pool checks every idle connection before lending one
// for a while: when a server dies, its other connections die with it, and
// the next borrower must not be handed one of them.
func (s *Session) serverLost(ctx context.Context, err error) error {
	if s.srv != nil {
		s.srv.Pool().Suspect()
	}
	return s.perform(ctx, s.m.ServerGone(err), 0, 0, false, fromNobody)
}

// release lets go of the held connection: back to its pool, or closed.
func (s *Session) release(ctx context.Context, how session.Release, cancel bool) {
	srv := s.srv
	if srv == nil {
		return
	}
	s.srv = nil
	if s.srvDL || !s.queryDL.IsZero() {
		// The next borrower must not inherit a deadline of this session.
		srv.SetReadDeadline(time.Time{})
	}
	s.srvDL = false
	s.queryDL, s.cancelled = time.Time{}, false
	s.reqStart = 0
	if s.inTx.Load() {
		s.inTx.Store(false)
	}
	s.publish()
	if how == session.ReleaseReturn && srv.W.Buffered() > 0 && srv.W.Flush() != nil {
		how = session.ReleaseDiscard
	}
	if cancel {
		s.cancelServer(ctx, srv)
	}
	if how == session.ReleaseReturn {
		srv.Pool().Return(srv)
	} else {
		srv.Pool().Discard(srv)
	}
}

// watch waits, on a goroutine of its own, for the held server to send
// something while the session goroutine waits for the client, and then
// wakes it. It reads nothing.
type watch struct {
	done  chan struct{}
	fired atomic.Bool
}

func (s *Session) startWatch() *watch {
	w := &watch{done: make(chan struct{})}
	srv, conn := s.srv, s.conn
	go func() {
		defer close(w.done)
		if srv.AwaitReadable() == nil {
			w.fired.Store(true)
			conn.SetReadDeadline(time.Now())
		}
	}()
	return w
}

func (s *Session) stopWatch(w *watch) {
	s.srv.SetReadDeadline(time.Now())
	<-w.done
	s.srv.SetReadDeadline(time.Time{})
	if s.closed.Load() {
		s.srv.SetReadDeadline(time.Now())
	}
	if w.fired.Load() {
		s.dlUnknown = true
	}
}
