package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/sluicedb/sluice/core/engine/evloop"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
)

// The event-loop engine. A client that has logged in (on its goroutine,
// where the TLS handshake, SCRAM and the first borrow may block) is handed
// to an event loop with the server connection it holds, and its goroutine
// ends. A TLS client keeps its tls.Conn, over a socket that never blocks
// (tlssocket.go).
// From then on the loop reads either socket only when an edge said it is
// readable, hands each framed message to the session machine, and carries
// out its Steps, as the goroutine engine does, with no goroutine of its
// own: an idle client costs its Session and its machine, no buffer.
//
// A server connection a loop session borrows leaves Go's poller and joins
// the loop (pool.Conn.Detach); it stays there, idle in its pool, for the
// next borrower of that loop. A goroutine session that borrows it takes it
// back (Reattach).
//
// Bounds: a peer's unwritten output beyond maxPending stops the reading of
// the other peer until it drains, so a client that reads nothing stops its
// server's results at the socket instead of in Sluice's memory; input is
// read ahead at most maxAhead bytes (or what the machine needs to see of a
// message).
const (
	maxPending = 256 << 10
	maxAhead   = 64 << 10
)

// Loops chooses the event loop of a session.
type Loops interface {
	// Pick returns a loop for a new session.
	Pick() *evloop.Loop
}

// loopSession is the loop side of a session.
type loopSession struct {
	l    *evloop.Loop
	ctx  context.Context
	reg  evloop.Reg
	c    peer // the client
	srv  *srvOnLoop
	done func()

	memo PoolMemo
	// A borrow that queued: where for, the client message that waits
	// (its type and length), and the callback, made once.
	bRoute    session.Route
	bN        int
	granted   func(*pool.Conn, error)
	bTyp      byte
	borrowing bool
	ended     bool
	// needReplies: the client's next message waits for the server's
	// replies to what came before it.
	needReplies bool
	// cNeed is how many bytes of the client's next message must be
	// buffered before the machine can take it.
	cNeed int
	timer *time.Timer
	// clientDL and queryDL: see the goroutine engine's fields of the
	// same names (idle in transaction, mid-message, query_timeout).
	clientDL, queryDL time.Time
	cancelled         bool
	// asking: a worker asks the session's policy (loopAsk); until the
	// answer is posted back nothing on the loop touches the machine, and
	// a timer that fires meanwhile (timerLate) is acted on then.
	asking, timerLate bool
	answered          func()
}

// peer is one socket's side of a loop session: what was read and not yet
// consumed, what is to be written, and the rest of a message being passed
// on.
type peer struct {
	fd       int
	in       []byte // buffered input; in[off:] unconsumed
	off      int
	out      []byte // unwritten output
	readable bool   // an edge said so, and no short read since
	ended    bool   // an edge told of the peer's end or an error
	eof      error
	werr     error
	fwd      int // bytes of the current message still to pass to the other peer
	drop     int // ... or to consume unforwarded
	// held is output for this peer that waits for the message the other
	// peer is passing to it (other.fwd) to be through.
	held []byte
	// tls is the socket of a TLS client, whose reads and writes go
	// through its tls.Conn; nil for plaintext.
	tls *tlsSocket
}

// send queues b for dst, or holds it while other is passing dst a
// message: each direction is read while the other is mid-message, so
// that a long message one way never waits for the other way to drain.
func (lp *loopSession) send(dst, other *peer, b []byte) {
	if len(b) == 0 {
		return
	}
	if other != nil && other.fwd > 0 {
		dst.held = append(dst.held, b...)
		return
	}
	dst.queue(lp.l, b)
}

// passed queues what dst held for the end of src's message, once it is
// through.
func (lp *loopSession) passed(src, dst *peer) {
	if src.fwd == 0 && dst != nil && len(dst.held) > 0 {
		dst.queue(lp.l, dst.held)
		dst.held = nil
	}
}

// srvOnLoop is a server connection detached onto a loop: its pool.Home.
type srvOnLoop struct {
	l    *evloop.Loop
	c    *pool.Conn
	reg  evloop.Reg
	p    peer
	sess *Session // the holder; nil while idle in the pool
	// sawEvent: an edge came while idle; the next holder reads first.
	sawEvent bool
}

var _ pool.Home = (*srvOnLoop)(nil)

// Closing forgets the socket's registration (pool.Home).
func (h *srvOnLoop) Closing(*pool.Conn) {
	h.l.Post(func() { h.l.Forget(h.reg) })
}

// Owner returns the loop (pool.Home).
func (h *srvOnLoop) Owner() any { return h.l }

// Event is the server socket's readiness (evloop.Handler).
func (h *srvOnLoop) Event(ev uint32) {
	h.p.ready(ev)
	if h.sess == nil {
		h.sawEvent = h.sawEvent || h.p.readable
		h.p.readable = false
		return
	}
	h.sess.loopRun()
}

// clientEvents receives the client socket's readiness.
type clientEvents struct{ s *Session }

func (e clientEvents) Event(ev uint32) {
	e.s.lp.c.ready(ev)
	e.s.loopRun()
}

// detachConn takes a plaintext client socket off Go's poller.
func detachConn(nc net.Conn) (int, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, dupErr
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// loopable reports whether the session may move to an event loop: a TCP
// client, in plaintext or TLS made by TLSServer, and a held server
// connection (if any) in plaintext.
func (s *Session) loopable() bool {
	switch c := s.conn.(type) {
	case *net.TCPConn:
	case *tls.Conn:
		if socketOf(c) == nil {
			return false
		}
	default:
		return false
	}
	return s.srv == nil || s.srv.Plaintext()
}

// handOff moves a logged-in session to l. It reports false, with the
// session untouched, when it cannot; then the goroutine engine goes on.
func (s *Session) handOff(ctx context.Context, l *evloop.Loop) bool {
	if !s.loopable() || s.cw.Buffered() > 0 && s.cw.Flush() != nil {
		return false
	}
	nc := s.conn
	tc, _ := s.conn.(*tls.Conn)
	var sock *tlsSocket
	if tc != nil {
		sock = socketOf(tc)
		nc = sock.conn
	}
	fd, err := detachConn(nc)
	if err != nil {
		return false
	}
	lp := &loopSession{l: l, ctx: ctx, c: peer{fd: fd, tls: sock}, done: s.onEnd}
	lp.c.in = s.cr.TakeBuffered()
	s.mu.Lock()
	if sock != nil {
		sock.toLoop(l, fd, tc)
	}
	s.conn = nil // an idle session keeps no more than its fd (and its TLS state)
	s.mu.Unlock()
	nc.Close() // the dup in fd keeps the socket
	putReaderWriter(s.cr, s.cw)
	s.cr, s.cw = nil, nil
	srv := s.srv
	if s.ownPolicy {
		s.m.DeferDecisions(true)
	}
	s.onLoop.Store(l)
	l.Post(func() {
		s.lp = lp
		reg, err := l.Add(fd, clientEvents{s})
		if err != nil {
			unix.Close(fd)
			s.logAt(zapcore.ErrorLevel, "cannot register a client with the event loop", zap.Error(err))
			s.loopFinish(err)
			return
		}
		lp.reg = reg
		lp.c.readable = true
		s.logAt(zapcore.DebugLevel, "session moved to an event loop", zap.Int("loop", l.ID()))
		if srv != nil {
			if err := s.joinLoop(srv); err != nil {
				s.loopFinish(err)
				return
			}
		}
		s.loopRun()
	})
	return true
}

// joinLoop makes srv, already s.srv or just borrowed, the loop session's
// server connection, detaching it onto the loop if it is not there yet.
func (s *Session) joinLoop(srv *pool.Conn) error {
	lp := s.lp
	h, _ := srv.Home().(*srvOnLoop)
	if h != nil && h.l != lp.l {
		// Another loop's connection: it moves here, with a home of its
		// own, since the other loop may still be handing the old one an
		// event it collected. An idle connection has no buffered input.
		fd := h.reg.FD()
		h.l.Unregister(h.reg)
		h = &srvOnLoop{l: lp.l, c: srv}
		reg, err := lp.l.Add(fd, h)
		if err != nil {
			srv.SetHome(h) // closing it forgets nothing on either loop
			return err
		}
		srv.SetHome(h)
		h.reg, h.p = reg, peer{fd: fd, readable: true}
	}
	if h == nil {
		h = &srvOnLoop{l: lp.l, c: srv}
		fd, buffered, err := srv.Detach(h)
		if err != nil {
			return err
		}
		reg, err := lp.l.Add(fd, h)
		if err != nil {
			srv.Close()
			return err
		}
		h.reg, h.p = reg, peer{fd: fd, in: buffered, readable: true}
	}
	if h.sawEvent {
		h.p.readable, h.sawEvent = true, false
	}
	h.sess = s
	lp.l.SetHandler(h.reg, h) // a drain may have had its events
	lp.srv = h
	return nil
}

// leaveLoop takes srv, borrowed by a goroutine session, back to Go's
// poller.
func leaveLoop(srv *pool.Conn) error {
	h, ok := srv.Home().(*srvOnLoop)
	if !ok {
		return nil
	}
	h.l.Unregister(h.reg)
	if h.p.off < len(h.p.in) {
		return errors.New("server connection has unread input")
	}
	return srv.Reattach()
}

// loopRun makes all the progress it can on the session's events, then
// writes what is owed. Loop only.
func (s *Session) loopRun() {
	lp := s.lp
	if lp == nil || lp.ended || lp.asking {
		return // asking: the machine is the policy's until the answer is back
	}
	for !lp.ended {
		if s.closed.Load() {
			s.loopFinish(errClosed)
			return
		}
		if k := s.killErr.Load(); k != nil && s.killable() {
			s.loopFinish(k)
			return
		}
		s.loopRead()
		progress, err := s.loopServer()
		if err == nil && !progress {
			progress, err = s.loopClient()
		}
		if err != nil {
			s.loopFinish(err)
			return
		}
		if lp.asking {
			// The machine is the policy's until the answer is back:
			// what is owed goes out, and a failed write waits for it.
			s.loopFlush()
			return
		}
		if !progress {
			if err := s.loopIdle(); err != nil {
				s.loopFinish(err)
				return
			}
			wrote := s.loopFlush()
			if lp.c.werr != nil {
				s.loopFinish(errClientGone)
				return
			}
			if h := lp.srv; h != nil && h.p.werr != nil {
				if err := s.loopPerform(s.m.ServerGone(h.p.werr), 0, 0, fromNobody); err != nil {
					s.loopFinish(err)
					return
				}
				continue
			}
			if !wrote && !s.loopCanRead() {
				return // until the next edge
			}
			// What was written made room: what is buffered may move now.
		}
	}
}

// loopCanRead reports whether a read would be tried now.
func (s *Session) loopCanRead() bool {
	lp := s.lp
	if lp.c.readable && lp.c.eof == nil && s.wantClient() {
		return true
	}
	h := lp.srv
	return h != nil && h.p.readable && h.p.eof == nil && s.wantServer()
}

func (s *Session) wantClient() bool {
	lp := s.lp
	if h := lp.srv; h != nil && len(h.p.out) > maxPending {
		return false
	}
	return len(lp.c.in)-lp.c.off < max(maxAhead, lp.cNeed)
}

func (s *Session) wantServer() bool {
	lp := s.lp
	return lp.c.unsent() <= maxPending && len(lp.srv.p.in)-lp.srv.p.off < maxAhead
}

// loopRead reads what the sockets have, within the bounds.
func (s *Session) loopRead() {
	lp := s.lp
	if lp.c.readable && lp.c.eof == nil && s.wantClient() {
		lp.c.read(lp.l, lp.cNeed)
		if lp.c.eof == nil {
			s.lastActive.Store(lp.l.Now().UnixNano())
		}
	}
	if h := lp.srv; h != nil && h.p.readable && h.p.eof == nil && s.wantServer() {
		h.p.read(lp.l, 0)
	}
}

// ready notes the socket's readiness events.
func (p *peer) ready(ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		p.readable = true
		if p.tls != nil {
			p.tls.drained = false
		}
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		// The peer's end (or an error) came with this edge, maybe behind
		// data: no later edge will tell of it, so a short read does not
		// mean the socket is drained; reads go on until they see it.
		p.ended = true
	}
}

// read reads once into p.in, making room for need bytes.
func (p *peer) read(l *evloop.Loop, need int) {
	if p.in == nil {
		p.in = l.Buffer()
	}
	if p.off > 0 && (p.off == len(p.in) || cap(p.in)-len(p.in) < 4096) {
		n := copy(p.in, p.in[p.off:])
		p.in, p.off = p.in[:n], 0
	}
	if room := max(need, len(p.in)+4096); cap(p.in) < room {
		grown := make([]byte, len(p.in), max(room, 2*cap(p.in)))
		copy(grown, p.in)
		l.Recycle(p.in)
		p.in = grown
	}
	space := p.in[len(p.in):cap(p.in)]
	if p.tls != nil {
		p.readTLS(space)
		return
	}
	for {
		n, err := evloop.Read(p.fd, space)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			p.readable = false
		case err != nil:
			p.eof = err
		case n == 0:
			p.eof = errPeerEOF
		default:
			p.in = p.in[:len(p.in)+n]
			if n < len(space) && !p.ended {
				p.readable = false
			}
		}
		return
	}
}

var errPeerEOF = errors.New("EOF")

// buffered returns the unconsumed input.
func (p *peer) buffered() []byte { return p.in[p.off:] }

// consume drops k bytes of input, lending the buffer back when it empties.
func (p *peer) consume(l *evloop.Loop, k int) {
	p.off += k
	if p.off == len(p.in) {
		l.Recycle(p.in)
		p.in, p.off = nil, 0
	}
}

// queue appends b to the output.
func (p *peer) queue(l *evloop.Loop, b []byte) {
	if len(b) == 0 {
		return
	}
	if p.out == nil && len(b) <= evloop.BufferSize {
		p.out = l.Buffer()
	}
	p.out = append(p.out, b...)
}

// unsent is the output that waits for the socket: queued, and for TLS
// encrypted but not yet written.
func (p *peer) unsent() int {
	if p.tls != nil {
		return len(p.out) + len(p.tls.pending)
	}
	return len(p.out)
}

// flush writes the output until done or the socket is full.
func (p *peer) flush(l *evloop.Loop) bool {
	if p.tls != nil {
		return p.flushTLS(l)
	}
	wrote := false
	for len(p.out) > 0 && p.werr == nil {
		n, err := evloop.Write(p.fd, p.out)
		if n > 0 {
			wrote = true
			rest := copy(p.out, p.out[n:])
			p.out = p.out[:rest]
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			p.werr = err
		}
	}
	if len(p.out) == 0 && p.out != nil {
		l.Recycle(p.out)
		p.out = nil
	}
	return wrote
}

// loopFlush writes both peers' output; it reports whether anything went.
func (s *Session) loopFlush() bool {
	lp := s.lp
	wrote := false
	if h := lp.srv; h != nil {
		wrote = h.p.flush(lp.l)
	}
	return lp.c.flush(lp.l) || wrote
}

// passing reports a message half passed on: nothing else may be written
// to its peer until it is through.
func (s *Session) passing() bool {
	lp := s.lp
	return lp.c.fwd > 0 || lp.c.drop > 0 || lp.srv != nil && (lp.srv.p.fwd > 0 || lp.srv.p.drop > 0)
}

// moveRest passes on (or drops) what has arrived of the message src is in
// the middle of.
func (s *Session) moveRest(src, dst *peer) bool {
	b := src.buffered()
	if src.fwd > 0 {
		k := min(len(b), src.fwd)
		if k == 0 {
			return false
		}
		if dst != nil {
			dst.queue(s.lp.l, b[:k])
		}
		src.fwd -= k
		src.consume(s.lp.l, k)
		s.lp.passed(src, dst)
		return true
	}
	k := min(len(b), src.drop)
	if k == 0 {
		return false
	}
	src.drop -= k
	src.consume(s.lp.l, k)
	return true
}

// header returns the type and body length of the next message in b.
func header(b []byte) (typ byte, n int, err error) {
	l := int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4])
	if l < 4 || l > wire.MaxMessageLen {
		return 0, 0, wire.ErrBadLength
	}
	return b[0], l - 4, nil
}

// loopServer takes the server's next message, if it has sent one.
func (s *Session) loopServer() (bool, error) {
	lp := s.lp
	h := lp.srv
	if h == nil {
		return false, nil
	}
	if h.p.fwd > 0 || h.p.drop > 0 {
		return s.moveRest(&h.p, &lp.c), nil
	}
	if lp.c.unsent() > maxPending {
		return false, nil
	}
	if s.m.Expect() == session.ExpectNothing {
		// Idle in a transaction: what the server says unasked (a FATAL
		// as it is terminated, its close) waits, as it does in the
		// goroutine engine, and becomes the answer to the client's next
		// request, so that a client in transaction mode gets the server's
		// own error as an ERROR and goes on.
		return false, nil
	}
	b := h.p.buffered()
	if len(b) < wire.HeaderLen {
		if h.p.eof != nil {
			return true, s.loopServerLost(h.p.eof)
		}
		return false, nil
	}
	typ, n, err := header(b)
	if err != nil {
		return true, s.loopServerLost(err)
	}
	k := s.m.ServerNeeds(typ, n)
	if len(b) < wire.HeaderLen+k {
		if h.p.eof != nil {
			return true, s.loopPerform(s.m.ServerBroke(h.p.eof), 0, 0, fromNobody)
		}
		return false, nil
	}
	s.loopQueryTimeout()
	body := b[wire.HeaderLen : wire.HeaderLen+k]
	if typ == 'E' {
	}
	answer := typ == wire.MsgReadyForQuery && len(body) == 1 && s.m.AwaitsClientRequest()
	st := s.m.Server(typ, n, body)
	if answer {
		s.answered(h.c, body[0])
	}
	return true, s.loopPerform(st, typ, n, fromServer)
}

// loopServerLost is serverLost on the loop.
func (s *Session) loopServerLost(err error) error {
	if h := s.lp.srv; h != nil {
		h.c.Pool().Suspect()
	}
	return s.loopPerform(s.m.ServerGone(err), 0, 0, fromNobody)
}

// loopClient takes the client's next message, if it has sent one and the
// machine can take it now.
func (s *Session) loopClient() (bool, error) {
	lp := s.lp
	if lp.borrowing {
		return false, nil
	}
	if lp.c.fwd > 0 || lp.c.drop > 0 {
		var dst *peer
		if lp.srv != nil {
			dst = &lp.srv.p
		} else if lp.c.fwd > 0 {
			lp.c.drop, lp.c.fwd = lp.c.fwd, 0 // its server went away
		}
		moved := s.moveRest(&lp.c, dst)
		if lp.c.fwd == 0 && lp.c.drop == 0 && !lp.clientDL.IsZero() {
			lp.clientDL = time.Time{}
		}
		if !moved && lp.c.eof != nil {
			return true, s.loopClientGone(lp.c.eof, true)
		}
		return moved, nil
	}
	b := lp.c.buffered()
	if len(b) < wire.HeaderLen {
		if lp.c.eof != nil {
			return true, s.loopClientGone(lp.c.eof, len(b) > 0)
		}
		return false, nil
	}
	typ, n, err := header(b)
	if err != nil {
		return true, wire.Fatalf(wire.CodeProtocolViolation, "invalid message length")
	}
	k := s.m.ClientNeeds(typ, n)
	if len(b) < wire.HeaderLen+k {
		lp.cNeed = wire.HeaderLen + k
		if lp.c.eof != nil {
			return true, s.loopClientGone(lp.c.eof, true)
		}
		return false, nil
	}
	lp.cNeed = 0
	body := b[wire.HeaderLen : wire.HeaderLen+k]
	st := s.m.Client(typ, n, body)
	switch st.Need {
	case session.NeedServer:
		s.loopBorrow(st.Route, typ, n)
		return true, nil
	case session.NeedReplies:
		lp.needReplies = true
		return false, nil // the server's answers come first
	case session.NeedDecision:
		s.loopAsk()
		return false, nil
	}
	lp.needReplies = false
	if len(st.ToServer) > 0 || st.Skip < wire.HeaderLen+n && lp.srv != nil && !st.End {
		if lp.srv != nil {
			s.forwarded()
		}
	}
	return true, s.loopPerform(st, typ, n, fromClient)
}

// loopClientGone ends a client that closed, or broke off mid-message.
func (s *Session) loopClientGone(err error, midMessage bool) error {
	if midMessage && s.lp.srv != nil && s.lp.c.fwd > 0 {
		s.loopRelease(session.ReleaseDiscard, false)
	}
	if errors.Is(err, errPeerEOF) {
		return errEnded
	}
	return err
}

// loopPerform carries out st, as perform does.
func (s *Session) loopPerform(st session.Step, typ byte, n int, from source) error {
	lp := s.lp
	h := lp.srv
	var sp *peer
	if h != nil {
		sp = &h.p
	}
	if !lp.ended {
		lp.send(&lp.c, sp, st.ToClient)
	}
	if sp != nil {
		lp.send(sp, &lp.c, st.ToServer)
	}
	if from != fromNobody {
		src, dst := &lp.c, (*peer)(nil)
		if from == fromClient {
			if h != nil {
				dst = &h.p
			}
		} else {
			src = &h.p
			if !lp.ended { // else the client left: its replies are dropped
				dst = &lp.c
			}
		}
		total := wire.HeaderLen + n
		skip := min(max(st.Skip, 0), total)
		forward := skip < total && !st.End && dst != nil
		avail := len(src.buffered())
		now := min(avail, total)
		if forward {
			if skip < now {
				dst.queue(lp.l, src.buffered()[skip:now])
			}
			src.fwd = total - max(now, skip)
			if skip > now {
				src.drop = skip - now
			}
		} else {
			src.drop = total - now
		}
		src.consume(lp.l, now)
		lp.passed(src, dst)
		if from == fromClient && src.fwd > 0 {
			// The rest of the message is on its way: a client that stops
			// half-way is bounded.
			t := midMessageTimeout
			if it := s.env.IdleInTransactionTimeout; it > 0 && it < t {
				t = it
			}
			s.loopDeadline(&lp.clientDL, lp.l.Now().Add(t))
		}
	}
	if st.Release != session.Keep {
		s.loopRelease(st.Release, st.Cancel)
	} else if s.m.PinBits() != s.pinBits {
		s.publish()
	}
	if st.End {
		if st.Err != nil {
			return errors.Join(errEnded, st.Err)
		}
		return errEnded
	}
	return nil
}

// loopRelease lets go of the held connection, as release does.
func (s *Session) loopRelease(how session.Release, cancel bool) {
	lp := s.lp
	h := lp.srv
	if h == nil {
		return
	}
	srv := h.c
	lp.srv, s.srv = nil, nil
	lp.queryDL, lp.cancelled = time.Time{}, false
	s.reqStart = 0
	if s.inTx.Load() {
		s.inTx.Store(false)
	}
	s.publish()
	if how == session.ReleaseReturn {
		h.p.flush(lp.l)
		if len(h.p.out) > 0 || h.p.werr != nil || h.p.off < len(h.p.in) || h.p.fwd > 0 || h.p.drop > 0 || h.p.eof != nil || h.p.ended {
			how = session.ReleaseDiscard
		}
	}
	if len(h.p.held) > 0 {
		how = session.ReleaseDiscard // it was owed bytes it never got
	}
	h.sess = nil
	h.p.fwd, h.p.drop, h.p.held = 0, 0, nil
	lp.passed(&h.p, &lp.c)
	lp.l.Recycle(h.p.in)
	lp.l.Recycle(h.p.out)
	h.p.in, h.p.off, h.p.out = nil, 0, nil
	h.sawEvent = h.p.readable
	h.p.readable = false
	if cancel {
		ctx := lp.ctx
		go func() { // a cancel dials: off the loop
			s.cancelServer(ctx, srv)
			give(srv, how)
		}()
		return
	}
	give(srv, how)
}

// give hands a released connection back to its pool.
func give(srv *pool.Conn, how session.Release) {
	if how == session.ReleaseReturn {
		srv.Pool().Return(srv)
	} else {
		srv.Pool().Discard(srv)
	}
}

// loopBorrow borrows a server connection for route without blocking the
// loop; the client's message (type typ, body length n) waits.
func (s *Session) loopBorrow(route session.Route, typ byte, n int) {
	lp := s.lp
	lp.borrowing = true
	if s.env.BorrowFunc != nil {
		lp.bRoute, lp.bTyp, lp.bN = route, typ, n
		if lp.granted == nil {
			lp.granted = func(srv *pool.Conn, err error) { s.loopGranted(lp, srv, err) }
		}
		for range 4 {
			srv, queued := s.env.BorrowFunc(s.user, s.database, route, lp.l, lp.l.Now(), &lp.memo, lp.granted)
			if queued {
				return
			}
			if srv == nil {
				break
			}
			if h, ok := srv.Home().(*srvOnLoop); ok && h.l == lp.l && h.p.ended {
				// Its server closed it (or it failed) while it was idle
				// here: it would fail the statement, not run it.
				srv.Pool().Suspect()
				srv.Pool().Discard(srv)
				continue
			}
			s.loopBorrowed(srv, nil, typ, n, false)
			return
		}
	}
	s.loopBorrowOff(route, typ, n)
}

// loopGranted receives, on any goroutine, the connection (or error) a
// borrow that queued waited for, and takes it to the loop.
func (s *Session) loopGranted(lp *loopSession, srv *pool.Conn, err error) {
	lp.l.Post(func() {
		if err != nil && !errors.Is(err, pool.ErrBorrowTimeout) {
			// A pool retired or a dial that failed: Borrow tries
			// again across the failover.
			s.loopBorrowOff(lp.bRoute, lp.bTyp, lp.bN)
			return
		}
		s.loopBorrowed(srv, err, lp.bTyp, lp.bN, true)
	})
}

// loopBorrowOff borrows on a goroutine, which posts the result back.
func (s *Session) loopBorrowOff(route session.Route, typ byte, n int) {
	lp := s.lp
	ctx := lp.ctx
	go func() {
		srv, err := s.env.Borrow(ctx, s.user, s.database, route)
		lp.l.Post(func() { s.loopBorrowed(srv, err, typ, n, true) })
	}()
}

// loopBorrowed takes the result of loopBorrow.
func (s *Session) loopBorrowed(srv *pool.Conn, err error, typ byte, n int, resume bool) {
	lp := s.lp
	lp.borrowing = false
	if lp.ended {
		if srv != nil {
			srv.Pool().Return(srv)
		}
		return
	}
	if err == nil && !srv.Plaintext() {
		// A TLS server connection (tls.mode prefer or stricter): only a
		// goroutine can drive it.
		if lerr := s.loopLeave(srv, typ, n); lerr == nil {
			return
		} else {
			srv.Pool().Return(srv)
			err = lerr
		}
	}
	if err == nil {
		s.srv = srv
		if jerr := s.joinLoop(srv); jerr != nil {
			s.srv = nil
			srv.Pool().Discard(srv)
			err = jerr
		}
	}
	if err != nil {
		st := s.m.Refuse(typ, n, borrowError(lp.ctx, err))
		if err := s.loopPerform(st, typ, n, fromClient); err != nil {
			s.loopFinish(err)
			return
		}
		if resume {
			s.loopRun()
		}
		return
	}
	s.queryDL, s.cancelled = time.Time{}, false
	s.reqStart = 0
	if s.inTx.Load() {
		s.inTx.Store(false)
	}
	s.publish()
	if err := s.loopPerform(s.m.Attach(&srv.ServerState), 0, 0, fromNobody); err != nil {
		s.loopFinish(err)
		return
	}
	if resume {
		s.loopRun()
	}
}

// loopLeave moves the session, between two messages of its client and
// holding no server connection, from its loop to a goroutine of its own
// that goes on with srv: the client's socket returns to Go's poller with
// what was read of it and what is owed to it.
func (s *Session) loopLeave(srv *pool.Conn, typ byte, n int) error {
	lp := s.lp
	f := os.NewFile(uintptr(lp.c.fd), "client")
	nc, err := net.FileConn(f) // a dup of fd, on Go's poller
	if err != nil {
		f.Close() // the fd stays the loop's: f must not close it
		return err
	}
	lp.ended = true
	if lp.timer != nil {
		lp.timer.Stop()
	}
	lp.l.Remove(lp.reg)
	f.Close()
	in := append([]byte(nil), lp.c.buffered()...)
	out := append([]byte(nil), lp.c.out...)
	lp.l.Recycle(lp.c.in)
	lp.l.Recycle(lp.c.out)
	lp.c.in, lp.c.out = nil, nil
	conn := net.Conn(nc)
	sock := lp.c.tls
	if sock != nil {
		sock.toGoroutine(nc)
		conn = sock.tc
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	s.cr = newReader(io.MultiReader(bytes.NewReader(in), conn))
	s.cw = newWriter(conn)
	s.lp = nil
	s.onLoop.Store(nil)
	s.logAt(zapcore.DebugLevel, "session left its event loop for a TLS server connection")
	ctx := lp.ctx
	go func() {
		defer func() {
			if s.onEnd != nil {
				s.onEnd()
			}
		}()
		var err error
		if sock != nil && sock.flushPending() != nil {
			err = errClientGone
		} else if _, werr := s.cw.Write(out); werr != nil {
			err = errClientGone
		} else if aerr := s.attach(srv); aerr != nil {
			// The client's message waits in s.cr: it is refused.
			err = s.perform(ctx, s.m.Refuse(typ, n, borrowError(ctx, aerr)), typ, n, false, fromClient)
		} else {
			err = s.perform(ctx, s.m.Attach(&srv.ServerState), 0, 0, false, fromNobody)
		}
		s.serveOn(ctx, err)
	}()
	return nil
}

// loopIdle arms the deadlines of a session about to wait, and lets the
// server send what it may be holding back.
func (s *Session) loopIdle() error {
	lp := s.lp
	if lp.borrowing {
		return nil
	}
	h := lp.srv
	if h != nil {
		s.loopQueryTimeout()
	}
	if h != nil && (lp.needReplies || s.m.Expect() == session.ExpectReplies || len(h.p.buffered()) > 0) {
		if f := s.m.Unstall(); f != nil {
			lp.send(&h.p, &lp.c, f)
		}
	}
	if t := s.env.IdleInTransactionTimeout; t > 0 && h != nil && s.m.InTransaction() &&
		s.m.Expect() != session.ExpectReplies && lp.c.fwd == 0 && len(lp.c.buffered()) == 0 {
		s.loopDeadline(&lp.clientDL, lp.l.Now().Add(t))
	} else if lp.c.fwd == 0 {
		lp.clientDL = time.Time{}
	}
	return nil
}

// loopQueryTimeout keeps queryDL in line with query_timeout.
func (s *Session) loopQueryTimeout() {
	lp := s.lp
	if s.env.QueryTimeout <= 0 {
		return
	}
	if s.m.AwaitsClientRequest() {
		if lp.queryDL.IsZero() {
			s.loopDeadline(&lp.queryDL, lp.l.Now().Add(s.env.QueryTimeout))
		}
	} else {
		lp.queryDL, lp.cancelled = time.Time{}, false
	}
}

// loopDeadline sets *dl to t and makes sure the timer fires by then.
func (s *Session) loopDeadline(dl *time.Time, t time.Time) {
	lp := s.lp
	*dl = t
	d := t.Sub(lp.l.Now())
	if lp.timer == nil {
		lp.timer = lp.l.AfterFunc(d, s.loopTimer)
		return
	}
	lp.timer.Reset(d)
}

// loopTimer acts on the deadlines that passed.
func (s *Session) loopTimer() {
	lp := s.lp
	if lp.ended {
		return
	}
	if lp.asking {
		lp.timerLate = true
		return
	}
	now := time.Now()
	if dl := lp.clientDL; !dl.IsZero() && !now.Before(dl) {
		lp.clientDL = time.Time{}
		if lp.c.fwd > 0 || lp.c.drop > 0 {
			if lp.srv != nil {
				s.loopRelease(session.ReleaseDiscard, false)
			}
			s.loopFinish(wire.Fatalf(wire.CodeProtocolViolation, "client stopped in the middle of a message"))
			return
		}
		if s.m.InTransaction() && lp.srv != nil && len(lp.c.buffered()) == 0 {
			s.loopFinish(wire.Fatalf(wire.CodeIdleInTransaction, "terminating connection due to idle-in-transaction timeout"))
			return
		}
	}
	if dl := lp.queryDL; !dl.IsZero() && !now.Before(dl) && lp.srv != nil {
		if !lp.cancelled {
			lp.cancelled = true
			srv := lp.srv.c
			srv.MarkBroken()
			ctx := lp.ctx
			go s.cancelServer(ctx, srv)
			s.loopDeadline(&lp.queryDL, now.Add(cancelGrace))
		} else if err := s.loopPerform(s.m.ServerGone(errors.New("no answer to a query_timeout cancel")), 0, 0, fromNobody); err != nil {
			s.loopFinish(err)
			return
		}
	}
	var next time.Time
	for _, t := range []time.Time{lp.clientDL, lp.queryDL} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if !next.IsZero() {
		lp.timer.Reset(time.Until(next))
	}
	s.loopRun()
}

// loopFinish ends the session with err: the server connection is cleaned
// up as the machine says, the client told why when it should be, and the
// client socket closed.
func (s *Session) loopFinish(err error) {
	lp := s.lp
	if lp.ended {
		return
	}
	lp.ended = true
	if lp.timer != nil {
		lp.timer.Stop()
	}
	if h := lp.srv; h != nil {
		st := s.m.ClientGone()
		lp.c.fwd, lp.c.drop = 0, 0
		s.loopPerform(st, 0, 0, fromNobody)
		if lp.srv != nil {
			s.loopDrain()
		}
	}
	if we := s.logEnd(err); we != nil {
		lp.c.queue(lp.l, we.Encode(nil))
	}
	lp.c.flush(lp.l) // best effort: what does not fit now is dropped
	lp.l.Recycle(lp.c.in)
	lp.l.Recycle(lp.c.out)
	lp.c.in, lp.c.out = nil, nil
	if lp.reg.Valid() {
		lp.l.Remove(lp.reg)
	}
	unix.Close(lp.c.fd)
	s.publish()
	end := s.endPolicy
	done := lp.done
	go func() {
		if end != nil {
			end.Close() // the filters' session-end hook: off the loop
		}
		if done != nil {
			done()
		}
	}()
}

// loopDrain reads the server of a client that left until the machine
// releases the connection, within cleanupTimeout: the session goes on
// without its client.
func (s *Session) loopDrain() {
	lp := s.lp
	h := lp.srv
	d := &drainer{s: s, h: h}
	h.sess = nil
	lp.l.SetHandler(h.reg, d)
	d.timer = lp.l.AfterFunc(cleanupTimeout, func() {
		if lp.srv == h {
			s.loopRelease(session.ReleaseDiscard, false)
		}
	})
	d.Event(unix.EPOLLIN)
}

// drainer receives the events of a server connection whose client left.
type drainer struct {
	s     *Session
	h     *srvOnLoop
	timer *time.Timer
}

func (d *drainer) Event(ev uint32) {
	s, h, lp := d.s, d.h, d.s.lp
	if lp.srv != h {
		return
	}
	h.p.ready(ev)
	for lp.srv == h {
		if h.p.readable && h.p.eof == nil {
			h.p.read(lp.l, 0)
		}
		b := h.p.buffered()
		if h.p.fwd > 0 || h.p.drop > 0 {
			h.p.drop += h.p.fwd
			h.p.fwd = 0
			if !s.moveRest(&h.p, nil) {
				break
			}
			continue
		}
		if len(b) < wire.HeaderLen {
			if h.p.eof != nil {
				s.loopRelease(session.ReleaseDiscard, false)
			} else {
				if f := s.m.Unstall(); f != nil {
					h.p.queue(lp.l, f)
				}
				h.p.flush(lp.l)
			}
			break
		}
		typ, n, err := header(b)
		k := 0
		if err == nil {
			k = s.m.ServerNeeds(typ, n)
		}
		if err != nil || len(b) < wire.HeaderLen+k {
			if err != nil || h.p.eof != nil {
				s.loopRelease(session.ReleaseDiscard, false)
			}
			break
		}
		s.loopPerform(s.m.Server(typ, n, b[wire.HeaderLen:wire.HeaderLen+k]), typ, n, fromServer)
		if lp.srv == h {
			h.p.flush(lp.l)
		}
	}
	if lp.srv != h {
		d.timer.Stop()
	}
}

// loopAsk has a worker ask the session's policy about the client's message
// (session.NeedDecision) and post the answer back: a filter call never
// runs on the loop, where a slow one would hold up every client of the
// loop (BENCHMARKS.md: on the loop a call that ran to its deadline held
// the loop 9-13 ms; off it, 1-3 µs, and the call itself was 4x cheaper).
func (s *Session) loopAsk() {
	lp := s.lp
	if lp.asking {
		panic("engine: a second policy call for one session")
	}
	lp.asking = true
	if lp.answered == nil {
		lp.answered = func() { s.loopAnswered(lp) }
	}
	askers.ask(s.m, lp.l, lp.answered)
}

// loopAnswered takes the policy's answer back on the loop and goes on
// with the session: the message that waited for it first, so that it
// meets the machine as the decision left it (whatever the server said
// meanwhile comes after, as it would have with the call made in place).
func (s *Session) loopAnswered(lp *loopSession) {
	lp.asking = false
	if lp.ended {
		return
	}
	if _, err := s.loopClient(); err != nil {
		s.loopFinish(err)
		return
	}
	if lp.asking {
		return // asked again (the decision did not fit): the next answer goes on
	}
	if lp.timerLate {
		lp.timerLate = false
		s.loopTimer() // runs the session
		return
	}
	s.loopRun()
}
