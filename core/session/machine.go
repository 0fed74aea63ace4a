package session

import (
	"bytes"
	"strings"
	"sync"

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

// Config is what machines need of the proxy's settings. It is shared by
// every machine and must not change once in use.
type Config struct {
	Mode Mode
	// Track holds the lower-case names of the parameters whose SET and
	// RESET are tracked and replayed instead of pinning; OnSetPin pins on
	// every SET instead.
	Track    map[string]bool
	OnSetPin bool
	// MaxPrepared caps the prepared statements kept per server connection,
	// MaxClientPrepared those one client may hold (transaction mode).
	MaxPrepared       int
	MaxClientPrepared int
	// Policy decides routes, rejects and pins; nil means DefaultPolicy.
	Policy Policy
	// RecordLSN records, after each commit that wrote (transaction mode),
	// the writer's WAL position, which the client's later replica borrows
	// carry in Route.MinLSN (read_your_writes).
	RecordLSN bool
}

// Key is the BackendKeyData a client is given.
type Key struct{ ProcessID, SecretKey uint32 }

// maxBindHead is how much of a Bind the machine needs to see: its portal
// and statement names. PostgreSQL truncates names to 63 bytes; longer heads
// are refused.
const maxBindHead = 16<<10 - wire.HeaderLen

// maxSmallBody bounds the Describe and Close bodies the machine inspects.
const maxSmallBody = 64 << 10

// Machine is one client session's protocol logic. Create it with New, run
// the login with Login, then offer it every client message (Client) and
// every message of the server connection it holds (Server). It is not safe
// for concurrent use; it never blocks.
type Machine struct {
	cfg    *Config
	policy Policy
	// deferred: the engine asks the policy (DeferDecisions).
	deferred bool

	// OnPin, if set, is called once per reason the session is pinned for.
	OnPin func(reason string)

	key    Key
	params params
	stmts  translator
	pins   pinSet
	seen   pinSet // reasons already reported to OnPin
	// policyReason is the text of pinPolicy.
	policyReason string

	srv *pool.ServerState // the held connection, or nil
	// busy is what the machine needs only while it serves requests; nil
	// while it is idle (see busyState).
	busy *busyState
	tx   byte // transaction status of the last ReadyForQuery
	// batch: extended-protocol messages sent since the last Sync.
	batch bool
	// held: the server may hold back its replies, as it flushes its output
	// only at a Sync, a Flush or the end of a simple Query; Unstall asks it
	// to send them.
	held       bool
	copyIn     bool // the server waits for the client's COPY data
	syncing    bool // a parameter sync runs: client messages wait
	discarding bool // after a reject in a batch: client messages are dropped up to Sync
	sawFatal   bool // the server sent a FATAL: it closes next
	// softFatal: that FATAL went to the client as an ERROR, because the
	// client survives its server connection (transaction mode, not
	// pinned); ServerGone then answers the rest of what was owed.
	softFatal bool
	gone      bool // the client left; the held connection is being cleaned up
	// lostTx: the server connection of the client's open transaction was
	// lost; the client is answered as in a failed transaction until it
	// sends ROLLBACK.
	lostTx bool
	// lostEnd: in a lost transaction, a Parse or Bind of a statement
	// that ends it was answered; lostEnded: its Execute too, so the
	// next Sync finds the client out of the transaction.
	lostEnd, lostEnded bool
	// ending: the batch being sent ends a transaction, so that if the
	// server is lost under it the client is out of its transaction.
	ending bool

	// Read-your-writes (lsn.go, sluice.go). record: RecordLSN in
	// transaction mode.
	record bool
	// minInTx: min_lsn was set inside the open transaction, and was
	// busy.minBefore before it: a rollback restores it.
	minInTx bool
	txWrote bool // the open transaction wrote (record)
	// batchWrites: the extended-protocol batch since the last Sync
	// executes a statement that writes (record).
	batchWrites bool
	lsnDue      bool // a commit's position is to be recorded before the connection goes
	// What the server reported for the request it is answering: a COMMIT
	// or ROLLBACK command tag, an error (record, or minInTx).
	sawCommit, sawRollback, reqErr bool
	minLSN                         LSN // SET sluice.min_lsn
	lastLSN                        LSN // the writer's position after the client's last commit that wrote

	// sql is the text of the client's last simple Query that was
	// classified, kept from one transaction to the next: clients repeat
	// their statements, and comparing with it saves a copy.
	sql string

	login *loginState
	// out and cout hold what a Step sends to the server and to the
	// client; they stay with the machine, as a Step's bytes must outlive
	// the call that made it.
	out, cout []byte
}

// busyState is the part of a machine's state that matters only while it
// serves requests. An idle machine has none, so that an idle client keeps
// neither a reply queue nor the classification and policy decision of its
// last statement: the machine takes one from spareBusy when it decides
// where a borrow goes or is given a server connection (getBusy), and gives
// it back when it has neither a connection nor a decision left to carry
// out (putBusy). Its storage (the reply queue's, the classification's) is
// reused from one transaction to the next, across sessions.
//
// The machine has a busy state whenever it holds a server connection, and
// from a decision for a borrow to the Attach or Refuse that follows it;
// what returns Steps never refers to it (a Step's bytes are in out and
// cout, which stay with the machine).
type busyState struct {
	q replyQueue
	// Clients send COPY data without waiting for CopyInResponse: copyEnds
	// counts the CopyDone and CopyFail the client sent, copies the
	// CopyInResponses, since nothing was last owed.
	copyEnds, copies int
	internal         *wire.Error           // the error of Sluice's own exchange in progress
	row              []string              // the row of a read-back in progress
	class            []sqlclass.Statement  // the classification of a simple Query (of Machine.sql)
	one              [1]sqlclass.Statement // Statement.Class of a Parse or Bind
	stmt             Statement             // what the policy is shown, reused
	askTyp           byte                  // the type of the message stmt is (for AskPolicy)
	asked            askedDecision         // the decision that asked for the last borrow
	classValid       bool                  // class belongs to the message offered again after a borrow
	pendDef          *stmtDef              // likewise for a Parse
	minBefore        LSN                   // see Machine.minInTx
}

// spareBusy holds the busy states that machines gave back, for the next
// machine that gets busy; it is shared by all machines. A machine takes one
// and gives it back once per transaction, so that the per-transaction path
// allocates nothing. (A sync.Pool would drop some of them at random under
// the race detector, and with them the test of that guarantee.)
var spareBusy struct {
	sync.Mutex
	free []*busyState
}

// Bounds on the spare busy states: how many are kept, and what one keeps
// for its next user, so that a client that pipelined thousands of messages
// or sent thousands of statements in one Query does not leave that storage
// behind.
const (
	maxSpareBusy   = 256
	maxKeptReplies = 64
	maxKeptClass   = 16
)

// getBusy gives the machine a busy state if it has none.
func (m *Machine) getBusy() {
	if m.busy == nil {
		m.takeBusy()
	}
}

// takeBusy gives the machine a spare busy state, or a new one.
func (m *Machine) takeBusy() {
	spareBusy.Lock()
	if n := len(spareBusy.free); n > 0 {
		m.busy = spareBusy.free[n-1]
		spareBusy.free[n-1] = nil
		spareBusy.free = spareBusy.free[:n-1]
	}
	spareBusy.Unlock()
	if m.busy == nil {
		m.busy = new(busyState)
	}
}

// putBusy gives the busy state back if the machine has no use left for it:
// no server connection held, no login under way, and no decision or
// classification kept for a message to be offered again. Nothing may use
// m.busy after it in the same call unless getBusy comes first.
func (m *Machine) putBusy() {
	if m.srv == nil && m.busy != nil {
		m.giveBusy()
	}
}

// forgetDecision drops what was kept for the message offered, which is
// answered without a server connection, and with it the busy state if the
// machine has no other use for it.
func (m *Machine) forgetDecision() {
	if b := m.busy; b != nil {
		b.classValid, b.pendDef, b.asked.valid = false, nil, false
		m.putBusy()
	}
}

// giveBusy is putBusy once the connection is known to be gone.
func (m *Machine) giveBusy() {
	b := m.busy
	if m.login != nil || b.classValid || b.asked.valid || b.pendDef != nil {
		return
	}
	m.busy = nil
	b.q.reset()
	if cap(b.q.items) > maxKeptReplies {
		b.q.items = nil
	}
	if cap(b.class) > maxKeptClass {
		b.class = nil
	}
	b.copyEnds, b.copies = 0, 0
	// What the last user's statements referred to goes (one is a copy of
	// a classification a stmtDef keeps anyway).
	b.internal, b.row = nil, nil
	b.stmt = Statement{}
	b.asked = askedDecision{}
	spareBusy.Lock()
	if len(spareBusy.free) < maxSpareBusy {
		spareBusy.free = append(spareBusy.free, b)
	}
	spareBusy.Unlock()
}

// New returns a machine for one client.
func New(cfg *Config, key Key) *Machine {
	m := &Machine{cfg: cfg, key: key, tx: wire.TxIdle}
	m.policy = cfg.Policy
	if m.policy == nil {
		m.policy = DefaultPolicy{}
	}
	m.record = cfg.RecordLSN && cfg.Mode == ModeTransaction
	m.stmts.maxServer = max(cfg.MaxPrepared, 1)
	m.stmts.maxClient = cfg.MaxClientPrepared
	if m.stmts.maxClient <= 0 {
		m.stmts.maxClient = 1000
	}
	return m
}

// Key returns the BackendKeyData the client was given (in session mode, with
// the server's process ID).
func (m *Machine) Key() Key { return m.key }

// Holding reports whether the machine holds a server connection.
func (m *Machine) Holding() bool { return m.srv != nil }

// InTransaction reports that the held connection is inside a transaction or
// an unfinished extended-protocol batch: what idle_in_transaction_timeout
// bounds.
func (m *Machine) InTransaction() bool {
	return m.srv != nil && !m.gone && (m.tx != wire.TxIdle || m.batch || m.copyIn)
}

// SetPolicy makes p decide this session's statements in place of
// Config.Policy (a per-session policy, such as the filters' chain for this
// client). Call it before Login.
func (m *Machine) SetPolicy(p Policy) {
	if p != nil {
		m.policy = p
	}
}

// Pinned returns the sorted reasons the session keeps its connection.
func (m *Machine) Pinned() []string { return m.pins.texts(m.policyReason) }

// AwaitsClientRequest reports whether replies owed are those of client
// requests (as opposed to Sluice's own exchanges): what query_timeout bounds.
func (m *Machine) AwaitsClientRequest() bool {
	r := m.owed()
	return r != nil && !m.gone && r.kind != replyInternal && m.busy.q.requests > 0
}

// owed returns the next reply the held connection owes, or nil.
func (m *Machine) owed() *reply {
	if m.srv == nil {
		return nil // and an idle machine may have no busy state
	}
	return m.busy.q.peek()
}

// Expect says what the held server may send next.
func (m *Machine) Expect() Expect {
	switch {
	case m.srv == nil:
		return ExpectNothing
	case m.copyIn:
		// The server waits for the client's data, but reports an error in
		// it at once (clients stop sending when they see it).
		return ExpectMaybe
	case m.busy.q.requests > 0 && m.held:
		// Owed, but the server sends them when its buffer fills or at
		// the client's Sync: the client is read meanwhile.
		return ExpectMaybe
	case m.busy.q.requests > 0:
		return ExpectReplies
	case m.gone:
		return ExpectNothing
	case m.batch || m.tx == wire.TxIdle:
		return ExpectMaybe
	}
	return ExpectNothing
}

// flushMsg is a Flush message.
var flushMsg = []byte{wire.MsgFlush, 0, 0, 0, 4}

// Unstall returns a Flush for the server when it may be holding back
// replies the engine is about to wait for (part of a message can sit in
// its output buffer until it has more input), and nil otherwise. A Flush
// has no reply of its own.
func (m *Machine) Unstall() []byte {
	if m.srv == nil || !m.held || m.copyIn {
		return nil
	}
	m.held = false
	return flushMsg
}

// ClientNeeds returns how many bytes of the body of a client message of
// type typ and body length n the machine must see: the engine passes at
// least that many to Client (the whole body for a Query or Parse, of any
// size), and streams the rest.
func (m *Machine) ClientNeeds(typ byte, n int) int {
	if m.cfg.Mode == ModeSession {
		return 0
	}
	switch typ {
	case wire.MsgQuery, wire.MsgParse:
		return n
	case wire.MsgBind:
		return min(n, maxBindHead)
	case wire.MsgDescribe, wire.MsgClose:
		if n <= maxSmallBody {
			return n
		}
	}
	return 0
}

// ServerNeeds is ClientNeeds for server messages.
func (m *Machine) ServerNeeds(typ byte, n int) int {
	switch typ {
	case wire.MsgReadyForQuery, wire.MsgErrorResponse, wire.MsgParameterStatus:
		return n
	case wire.MsgDataRow:
		if r := m.owed(); r != nil && r.kind == replyInternal && (r.purpose == internalReadBack || r.purpose == internalLSN) {
			return n
		}
	case wire.MsgCommandComplete:
		if m.record || m.minInTx {
			return n
		}
	}
	return 0
}

// Client takes the next client message: its type, body length n and the
// first ClientNeeds(typ, n) bytes (or more) of its body.
func (m *Machine) Client(typ byte, n int, body []byte) Step {
	all := wire.HeaderLen + n
	switch typ {
	case wire.MsgTerminate:
		return Step{Skip: all, End: true}
	case wire.MsgQuery, wire.MsgParse, wire.MsgBind, wire.MsgDescribe, wire.MsgExecute, wire.MsgClose,
		wire.MsgSync, wire.MsgFlush, wire.MsgFunctionCall, wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
	default:
		return m.fatal(wire.Fatalf(wire.CodeProtocolViolation, "invalid frontend message type %d", typ))
	}
	if m.login != nil || m.gone {
		return m.fatal(wire.Fatalf(wire.CodeProtocolViolation, "unexpected message type %q", typ))
	}
	if m.discarding {
		if typ != wire.MsgSync {
			return Step{Skip: all}
		}
		m.discarding = false
		if m.srv == nil {
			status := byte(wire.TxIdle)
			if m.lostTx {
				status = wire.TxFailed
			}
			return Step{Skip: all, ToClient: wire.AppendReadyForQuery(m.cout[:0], status)}
		}
		m.busy.q.push(reply{kind: replySync})
		m.batch, m.batchWrites = false, false
		return Step{}
	}
	if (typ == wire.MsgCopyDone || typ == wire.MsgCopyFail) && m.srv != nil {
		// With nothing owed no COPY can be under way or about to start:
		// the end belongs to a COPY the server refused, and it drops it.
		if m.copyIn || m.batch || m.busy.q.requests > 0 {
			m.busy.copyEnds++
		}
		m.copyIn = false
	}
	if m.copyIn {
		return Step{} // Sync and Flush too: the server ignores them in copy-in mode
	}
	if m.syncing {
		return Step{Need: NeedReplies}
	}
	if m.srv != nil && m.cfg.Mode == ModeTransaction && m.pins == 0 && !m.batch && m.tx == wire.TxIdle &&
		m.busy.q.requests > 0 && m.busy.q.onlyInternal() {
		// The client's transaction is over and the connection is about to
		// go back once Sluice's own exchange on it (a WAL position, a
		// read-back) is answered: the next statement waits for that and is
		// routed afresh, rather than run where the last one ran.
		return Step{Need: NeedReplies}
	}
	if m.lostTx && m.srv == nil {
		return m.lostReply(typ, all, body)
	}
	if typ == wire.MsgQuery && m.cfg.Mode == ModeTransaction && !m.batch && maybeSluice(body) {
		sql, _, _ := bytes.Cut(body, []byte{0})
		if st, ok := parseSluice(string(sql)); ok {
			if m.srv != nil && m.busy.q.requests > 0 {
				return Step{Need: NeedReplies} // answered in its turn
			}
			return m.sluiceAnswer(&st, all)
		}
	}
	if m.srv == nil {
		switch typ {
		case wire.MsgSync:
			// As PostgreSQL answers a Sync with nothing before it.
			return Step{Skip: all, ToClient: wire.AppendReadyForQuery(m.cout[:0], wire.TxIdle)}
		case wire.MsgFlush, wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
			return Step{Skip: all}
		}
		if typ == wire.MsgQuery && m.deallocate(body) {
			return m.deallocated(all)
		}
		if typ == wire.MsgParse && m.cfg.Mode == ModeTransaction && m.stmts.exceeds(body) {
			return m.rejectLocally(typ, all, m.stmts.errTooManyStatements())
		}
		if m.mustAsk(typ, body, true) {
			return Step{Need: NeedDecision}
		}
		d, ok := m.decide(typ, body, true)
		if !ok {
			return Step{Need: NeedServer, Route: m.route(Route{})}
		}
		if d.Reject != nil {
			return m.rejectLocally(typ, all, d.Reject)
		}
		return Step{Need: NeedServer, Route: m.route(d.Route)}
	}
	return m.forward(typ, n, body)
}

// route adds to r the WAL position a replica must have replayed for the
// client: its SET sluice.min_lsn, or its last recorded commit.
func (m *Machine) route(r Route) Route {
	if l := max(m.minLSN, m.lastLSN); l > r.MinLSN {
		r.MinLSN = l
	}
	return r
}

// decide classifies a message that needs a server and asks the policy. It
// keeps the classification for the same message offered again after the
// borrow. ok is false for a message the policy does not see.
func (m *Machine) decide(typ byte, body []byte, borrow bool) (Decision, bool) {
	st, reject, ok := m.statement(typ, body, borrow)
	if !ok {
		return Decision{}, false
	}
	if reject != nil {
		return Decision{Reject: reject}, true
	}
	if d, ok := m.kept(typ, st, borrow, true); ok {
		return d, true
	}
	d := m.policy.Decide(st)
	if borrow {
		m.keep(typ, st, d)
	}
	return d, true
}

// statement fills in what the policy is shown of a message that needs a
// server (classified once, however often the message is offered). ok is
// false for a message the policy does not see; reject is set for one
// refused without asking it.
func (m *Machine) statement(typ byte, body []byte, borrow bool) (st *Statement, reject *wire.Error, ok bool) {
	if m.cfg.Mode != ModeTransaction {
		return nil, nil, false
	}
	m.getBusy()
	st = &m.busy.stmt // reused: no allocation per statement
	*st = Statement{Borrow: borrow, InTransaction: m.srv != nil && m.tx != wire.TxIdle}
	switch typ {
	case wire.MsgQuery:
		sql, _, _ := bytes.Cut(body, []byte{0})
		// Compared without a copy: clients repeat their statements, and
		// a classification kept for the message offered again belongs to
		// that text only.
		if same := m.sql == string(sql); !same || !m.busy.classValid {
			if !same {
				m.sql = string(sql)
			}
			m.busy.class = sqlclass.Classify(m.busy.class[:0], m.sql)
			m.busy.classValid = true
		}
		st.SQL, st.Class = m.sql, m.busy.class
	case wire.MsgParse:
		_, rest, ok := bytes.Cut(body, []byte{0})
		if !ok {
			return nil, nil, false
		}
		if m.busy.pendDef == nil || m.busy.pendDef.key != string(rest) {
			if u := m.stmts.unnamed; u != nil && u.key == string(rest) {
				m.busy.pendDef = u // the same query again (drivers reparse the unnamed statement): classified once
			} else {
				m.busy.pendDef = newStmtDef(rest)
			}
		}
		if m.busy.pendDef.sluice {
			return nil, errExtendedSluice, true
		}
		m.busy.one[0] = m.busy.pendDef.class
		st.SQL, st.Class, st.Extended = m.busy.pendDef.query, m.busy.one[:], true
	case wire.MsgBind:
		_, name, ok := bindHead(body)
		if !ok {
			return nil, nil, false
		}
		def := m.stmts.unnamed
		if len(name) > 0 {
			def = m.stmts.prepared[string(name)]
		}
		if def == nil {
			return nil, nil, false
		}
		m.busy.one[0] = def.class
		st.SQL, st.Class, st.Extended = def.query, m.busy.one[:], true
	default:
		return nil, nil, false
	}
	return st, nil, true
}

// kept returns the decision made for st before (ok), if there is one: the
// decision for the message that asked for a borrow, for when it is offered
// again with the connection (one decision per statement, one policy
// call), or the one AskPolicy made for the message offered again. take
// consumes it.
func (m *Machine) kept(typ byte, st *Statement, borrow, take bool) (Decision, bool) {
	a := &m.busy.asked
	if !a.valid {
		return Decision{}, false
	}
	match := a.typ == typ && a.sql == st.SQL
	if borrow {
		// Only the decision AskPolicy just made for this borrow chooses
		// where it goes (once); it stays for the offer with the
		// connection.
		match = match && a.borrow && a.fresh
		if match && take {
			a.fresh = false
		}
		return a.d, match
	}
	// With the connection: a decision made for the borrow, or for this
	// very state of the transaction.
	match = match && (a.borrow || a.inTx == st.InTransaction)
	if take {
		a.valid = false
	}
	return a.d, match
}

// keep records d, the policy's decision for st.
func (m *Machine) keep(typ byte, st *Statement, d Decision) {
	m.busy.asked = askedDecision{valid: true, typ: typ, sql: st.SQL, borrow: st.Borrow, inTx: st.InTransaction, d: d}
}

// DeferDecisions sets whether the machine asks its policy itself (the
// default) or leaves that to its engine: a message that needs a decision
// not yet made is then answered with NeedDecision, and the engine calls
// AskPolicy (on any goroutine, making no other call on the machine until
// it returns) and offers the message again before anything else, so that
// the decision meets the state it was made in. The event-loop engine defers a
// filter chain's decisions so that a slow filter never holds up the other
// clients of its loop.
func (m *Machine) DeferDecisions(on bool) { m.deferred = on }

// mustAsk reports, for a machine that defers its decisions, that the
// message offered needs a decision not yet made: statement has prepared
// what AskPolicy shows the policy. It changes nothing else, so the message
// can be offered again as if for the first time.
func (m *Machine) mustAsk(typ byte, body []byte, borrow bool) bool {
	if !m.deferred {
		return false
	}
	st, reject, ok := m.statement(typ, body, borrow)
	if !ok || reject != nil {
		return false
	}
	_, known := m.kept(typ, st, borrow, false)
	if !known {
		m.busy.askTyp = typ
	}
	return !known
}

// AskPolicy asks the policy about the message a NeedDecision was for; the
// decision is kept for when the message is offered again. It may run on a
// goroutine of the engine's choosing: the machine must see no other call
// until it returns.
func (m *Machine) AskPolicy() {
	st := &m.busy.stmt
	m.keep(m.busy.askTyp, st, m.policy.Decide(st))
	m.busy.asked.fresh = true
}

// askedDecision is a policy's decision kept for a message offered again:
// the one that asked for a borrow, or the one AskPolicy made.
type askedDecision struct {
	valid  bool
	fresh  bool // made by AskPolicy, not yet used for its borrow
	borrow bool // made for a borrow (Statement.Borrow)
	inTx   bool // Statement.InTransaction
	typ    byte
	sql    string
	d      Decision
}

// forward takes a client message while a server connection is held.
func (m *Machine) forward(typ byte, n int, body []byte) Step {
	all := wire.HeaderLen + n
	rewriting := m.cfg.Mode == ModeTransaction
	if rewriting && m.deferred && (typ == wire.MsgParse || typ == wire.MsgQuery && !m.deallocatable(body)) &&
		m.mustAsk(typ, body, false) {
		return Step{Need: NeedDecision}
	}
	out := m.out[:0]
	if rewriting && m.busy.q.requests == 0 && !m.batch && len(m.srv.PendingClose) > 0 {
		out = m.stmts.closePending(out, m.srv, &m.busy.q)
	}
	step := Step{}
	switch typ {
	case wire.MsgQuery:
		if rewriting && m.deallocate(body) {
			m.out = out
			m.held = m.held || len(out) > 0
			s := m.deallocated(all)
			s.ToServer = out
			return s
		}
		if rewriting {
			d, _ := m.decide(typ, body, false)
			m.busy.classValid = false
			if d.Reject != nil {
				return m.rejectHeld(typ, all, out, d.Reject)
			}
			if d.Rewrite != "" {
				m.sql = d.Rewrite
				m.busy.class = sqlclass.Classify(m.busy.class[:0], d.Rewrite)
				out = wire.AppendQuery(out, d.Rewrite)
				step.Skip = all
			}
			for i := range m.busy.class {
				m.applyEffects(m.busy.class[i].Effects, d)
			}
			m.pinFor(d)
			// A simple Query destroys the unnamed statement.
			m.stmts.unnamed = nil
			m.srv.UnnamedKey = ""
			m.ending = endsClass(m.busy.class)
		}
		r := reply{kind: replySync, query: true, ends: m.ending}
		if m.record {
			r.writes = m.batchWrites || anyWrites(m.busy.class)
			m.batchWrites = false
		}
		m.busy.q.push(r)
		m.ending = false
		m.batch = false
	case wire.MsgParse:
		m.batch = true
		if !rewriting {
			m.busy.q.push(reply{kind: replyParse})
			break
		}
		d, ok := m.decide(typ, body, false)
		if ok && d.Reject != nil {
			m.busy.pendDef = nil
			return m.rejectHeld(typ, all, out, d.Reject)
		}
		rewritten := false
		if ok && d.Rewrite != "" {
			body, rewritten = rewriteParse(body, d.Rewrite), true
			_, rest, _ := bytes.Cut(body, []byte{0})
			m.busy.pendDef = newStmtDef(rest)
		}
		if ok {
			m.applyEffects(m.busy.pendDef.class.Effects, d)
			m.pinFor(d)
		}
		var replaced bool
		var err *wire.Error
		out, replaced, err = m.stmts.parse(out, m.srv, &m.busy.q, body, m.busy.pendDef)
		m.busy.pendDef = nil
		if err != nil {
			return m.rejectHeld(typ, all, out, err)
		}
		switch {
		case replaced:
			step.Skip = all
		case rewritten:
			out = wire.AppendMessage(out, wire.MsgParse, body)
			step.Skip = all
		}
	case wire.MsgBind:
		m.batch = true
		if !rewriting {
			break
		}
		// The decision its borrow was made by has been carried out (a
		// Bind consults none once it holds the connection).
		m.busy.asked.valid = false
		var def *stmtDef
		out, step.Skip, def = m.stmts.bind(out, m.srv, &m.busy.q, body, n)
		if def != nil {
			m.applyEffects(def.class.Effects, Decision{})
			m.ending = m.ending || endsClass([]sqlclass.Statement{def.class})
			if m.record && writes(&def.class) {
				m.batchWrites = true
			}
		}
	case wire.MsgDescribe, wire.MsgClose:
		m.batch = true
		if !rewriting {
			if typ == wire.MsgClose {
				m.busy.q.push(reply{kind: replyClose})
			}
			break
		}
		if len(body) < n { // too long to be a real name: the server refuses it
			if typ == wire.MsgClose {
				m.busy.q.push(reply{kind: replyClose})
			}
			break
		}
		var replace bool
		if out, replace = m.stmts.describeOrClose(out, m.srv, &m.busy.q, typ, body); replace {
			step.Skip = all
		}
	case wire.MsgExecute:
		m.batch = true
	case wire.MsgSync:
		m.busy.q.push(reply{kind: replySync, copyEnds: m.busy.copyEnds, ends: m.ending, writes: m.batchWrites})
		m.batch, m.batchWrites, m.ending = false, false, false
	case wire.MsgFunctionCall:
		m.busy.q.push(reply{kind: replySync, writes: m.record}) // a function may write
	}
	switch typ {
	case wire.MsgQuery, wire.MsgSync, wire.MsgFlush, wire.MsgFunctionCall:
		m.held = false
	case wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
	default:
		m.held = true
	}
	m.out = out
	step.ToServer = out
	return step
}

// pinFor applies a policy's pin override that forces a pin.
func (m *Machine) pinFor(d Decision) {
	if d.Pin == PinForce {
		if d.PinReason != "" {
			m.policyReason = d.PinReason
		} else if m.policyReason == "" {
			m.policyReason = "pinned by policy"
		}
		m.pin(pinPolicy)
	}
}

// applyEffects records what a statement does to session state: pins and
// unpins, and tracked parameters whose values must be read back once it
// has run. It runs before the statement is forwarded, so that a pin takes
// effect before the server can act on it.
func (m *Machine) applyEffects(effects []sqlclass.Effect, d Decision) {
	for _, e := range effects {
		switch e.Kind {
		case sqlclass.SetParam, sqlclass.ResetParam:
			if m.cfg.OnSetPin || !m.cfg.Track[e.Name] {
				if d.Pin != PinNever {
					m.pin(pinUntrackedSet)
				}
				continue
			}
			m.params.markDirty(e.Name)
		case sqlclass.ResetAll:
			m.params.resetAll = true
		case sqlclass.DiscardAll:
			m.params.resetAll = true
			m.pins &= pinSessionMode
			m.stmts.forget(m.srv)
		case sqlclass.Pin:
			if d.Pin != PinNever {
				m.pin(reasonBit(e.Reason))
			}
		case sqlclass.Unpin:
			m.pins &^= reasonBit(e.Reason)
			if e.Reason == sqlclass.ReasonPrepare {
				m.stmts.forget(m.srv) // DEALLOCATE ALL
			}
		}
	}
}

// pin adds reasons, reporting each once per session.
func (m *Machine) pin(add pinSet) {
	fresh := add &^ m.seen
	m.pins |= add
	m.seen |= add
	if m.OnPin == nil {
		return
	}
	for fresh != 0 {
		b := fresh & -fresh
		fresh &^= b
		m.OnPin(b.text(m.policyReason))
	}
}

// Server takes the next message of the held server connection: its type,
// body length n and the first ServerNeeds(typ, n) bytes of its body.
func (m *Machine) Server(typ byte, n int, body []byte) Step {
	all := wire.HeaderLen + n
	if m.srv == nil {
		return Step{Skip: all}
	}
	if r := m.busy.q.peek(); r != nil && r.kind == replyInternal {
		return m.ownReply(typ, all, body)
	}
	step := Step{}
	switch typ {
	case wire.MsgReadyForQuery:
		if len(body) != 1 {
			return m.serverBroken(wire.ErrBadLength)
		}
		m.busy.q.skipToSync(m.undo)
		r := m.busy.q.pop()
		if m.record || m.minInTx {
			m.requestEnded(&r, m.tx, body[0])
		}
		m.tx = body[0]
		if m.busy.q.requests == 0 {
			m.busy.copyEnds, m.busy.copies = 0, 0
		}
		step = m.afterReady()
	case wire.MsgCommandComplete:
		if m.record || m.minInTx {
			m.noteTag(body)
		}
	case wire.MsgErrorResponse:
		if e := pool.DecodeError(body); e.Fatal() {
			m.sawFatal = true
			if m.survivesServer() && m.busy.q.requests > 0 && !m.gone {
				// The server ends its session (terminated, shut down,
				// timed out) but the client's lives on: it gets the
				// server's error, as an ERROR, for the request in flight.
				m.softFatal = true
				soft := *e
				soft.Severity = wire.SeverityError
				soft.Hint = "The server ended its connection; the client's session continues on another one."
				step.Skip = all
				step.ToClient = soft.Encode(m.cout[:0])
				m.cout = step.ToClient
			}
		}
		m.reqErr = m.reqErr || m.record || m.minInTx
		m.copyIn = false
		m.busy.q.skipToSync(m.undo)
	case wire.MsgParameterStatus:
		if name, value, ok := wire.ParseParameterStatus(body); ok {
			m.srv.NoteParameterStatus(name, value)
			if !fixed[name] && m.params.values != nil {
				m.params.put(name, value)
			}
		}
	case wire.MsgParseComplete, wire.MsgCloseComplete:
		switch m.busy.q.pop().kind {
		case replyParseSwallow, replyCloseSwallow, replyBindSwallow:
			step.Skip = all
		case replyCloseAsParse:
			step.Skip = all
			step.ToClient = append(m.cout[:0], wire.MsgParseComplete, 0, 0, 0, 4)
		}
	case wire.MsgBindComplete:
		if r := m.busy.q.peek(); r != nil && r.kind == replyBindSwallow {
			m.busy.q.pop()
			step.Skip = all
		}
	case wire.MsgCopyInResponse, wire.MsgCopyBothResponse:
		m.busy.copies++
		if r := m.busy.q.peek(); r != nil && !r.query {
			// Syncs the client sent between the Execute and the end of its
			// data are ignored by the server in copy-in mode.
			m.busy.q.dropSyncs(m.busy.copies - 1)
		}
		m.copyIn = m.busy.copyEnds < m.busy.copies // else the client has already sent all its data
	}
	if m.gone {
		step.ToClient, step.Skip = nil, all
	}
	return step
}

// undo is the replyQueue's undo for replies the server skips.
func (m *Machine) undo(r *reply) {
	if m.srv != nil {
		m.stmts.undo(m.srv, r)
	}
}

// afterReady decides, after a ReadyForQuery for the client, whether the
// connection goes back to the pool or a parameter read-back is due first.
func (m *Machine) afterReady() Step {
	if m.busy.q.requests > 0 || m.batch || m.copyIn || m.tx != wire.TxIdle || m.sawFatal {
		return Step{}
	}
	if m.gone {
		return m.cleanup()
	}
	if m.lsnDue {
		m.lsnDue = false
		if m.srv.Params["in_hot_standby"] != "on" { // a replica's position says nothing of the writer's
			return m.own(internalLSN, lsnQuery, nil)
		}
	}
	if m.cfg.Mode != ModeTransaction || m.pins != 0 {
		return Step{}
	}
	if s, ok := m.refresh(); ok {
		return s
	}
	m.detach()
	return Step{Release: ReleaseReturn}
}

// refresh starts the next exchange a read-back needs, if any.
func (m *Machine) refresh() (Step, bool) {
	if m.params.due() {
		q, names := m.params.readBack(m.srv)
		if q != "" {
			return m.own(internalReadBack, q, names), true
		}
	}
	if q := m.params.syncQuery(m.srv); q != "" {
		return m.own(internalSync, q, nil), true
	}
	return Step{}, false
}

// own sends a simple query of Sluice's own.
func (m *Machine) own(purpose internalPurpose, sql string, names []string) Step {
	m.busy.q.push(reply{kind: replyInternal, purpose: purpose, names: names})
	m.busy.internal, m.busy.row = nil, nil
	m.out = wire.AppendQuery(m.out[:0], sql)
	m.held = false
	return Step{ToServer: m.out}
}

// ownReply consumes a reply to Sluice's own exchange.
func (m *Machine) ownReply(typ byte, all int, body []byte) Step {
	r := m.busy.q.peek()
	switch typ {
	case wire.MsgErrorResponse:
		e := pool.DecodeError(body)
		if e.Fatal() {
			m.sawFatal = true
		}
		if m.busy.internal == nil {
			m.busy.internal = e
		}
	case wire.MsgParameterStatus:
		if name, value, ok := wire.ParseParameterStatus(body); ok {
			m.srv.NoteParameterStatus(name, value)
			if r.purpose != internalReset && !fixed[name] && m.params.values != nil {
				m.params.put(name, value)
			}
		}
	case wire.MsgDataRow:
		if r.purpose == internalReadBack || r.purpose == internalLSN {
			row, err := wire.ParseDataRow(body)
			if err != nil {
				return m.serverBroken(err)
			}
			m.busy.row = row
		}
	case wire.MsgReadyForQuery:
		if len(body) != 1 {
			return m.serverBroken(wire.ErrBadLength)
		}
		done := m.busy.q.pop()
		m.tx = body[0]
		s := m.ownDone(done)
		s.Skip = all
		return s
	}
	return Step{Skip: all}
}

// ownDone finishes one of Sluice's own exchanges.
func (m *Machine) ownDone(r reply) Step {
	err := m.busy.internal
	m.busy.internal = nil
	switch r.purpose {
	case internalLogin:
		return m.loginDone(err)
	case internalSync:
		attaching := m.syncing
		m.syncing = false
		if err != nil || m.tx != wire.TxIdle {
			return m.failServer(wire.Fatalf(wire.CodeConnectionFailure,
				"server connection failed while applying session parameters").Wrap(errOr(err)))
		}
		m.params.synced(m.srv)
		if attaching {
			return Step{} // the message that borrowed the connection goes next
		}
		return m.afterReady()
	case internalReadBack:
		if err != nil || m.tx != wire.TxIdle || len(m.busy.row) != len(r.names) {
			return m.failServer(wire.Fatalf(wire.CodeConnectionFailure,
				"server connection failed while saving session parameters").Wrap(errOr(err)))
		}
		m.params.applyRow(m.srv, r.names, m.busy.row)
		m.busy.row = nil
		return m.afterReady()
	case internalLSN:
		if err == nil && len(m.busy.row) == 1 {
			if l, ok := ParseLSN(m.busy.row[0]); ok && l > m.lastLSN {
				m.lastLSN = l
			}
		}
		m.busy.row = nil
		if m.tx != wire.TxIdle {
			return m.failServer(wire.Fatalf(wire.CodeConnectionFailure,
				"server connection failed while recording its WAL position").Wrap(errOr(err)))
		}
		// A failure (a server in recovery) records nothing: the client's
		// reads are not held back by a position the writer never had.
		return m.afterReady()
	case internalReset:
		if err != nil {
			m.detach()
			return Step{Release: ReleaseDiscard, End: true}
		}
		if m.busy.q.requests > 0 {
			return Step{}
		}
		return m.finishCleanup()
	}
	return Step{}
}

// errOr returns err, or a generic error for a wrong transaction status.
func errOr(err *wire.Error) error {
	if err != nil {
		return err
	}
	return errUnexpectedStatus
}

// Attach gives the machine the server connection borrowed after NeedServer.
// The step it returns may hold a parameter sync for the server; the message
// that needed the connection is then offered again.
func (m *Machine) Attach(srv *pool.ServerState) Step {
	m.getBusy()
	m.srv = srv
	m.busy.q.reset()
	m.tx = wire.TxIdle
	m.batch, m.held, m.copyIn, m.sawFatal = false, false, false, false
	if m.login != nil {
		return m.loginAttached()
	}
	if q := m.params.syncQuery(srv); q != "" {
		m.syncing = true
		return m.own(internalSync, q, nil)
	}
	return Step{}
}

// Refuse tells the machine that the borrow for the message offered failed
// with err: the client gets err for that message as PostgreSQL reports a
// failed statement, or the session ends when err is FATAL. typ and n are
// the message's type and body length.
func (m *Machine) Refuse(typ byte, n int, err *wire.Error) Step {
	if m.login != nil || err.Fatal() {
		m.login = nil
		m.forgetDecision()
		return m.fatal(err)
	}
	return m.rejectLocally(typ, wire.HeaderLen+n, err)
}

// ClientGone tells the machine the client left. The step cleans up the held
// connection: the engine keeps reading the server and handing its messages
// to Server until a step releases it.
func (m *Machine) ClientGone() Step {
	m.gone = true
	m.login = nil
	if m.srv == nil {
		return Step{End: true}
	}
	if m.busy.q.requests > 0 || m.copyIn || m.sawFatal {
		// A statement is still running: stop it and drop the connection,
		// which is quicker and safer than waiting for it.
		m.detach()
		return Step{Release: ReleaseDiscard, Cancel: true, End: true}
	}
	if m.cfg.Mode == ModeSession && (m.tx != wire.TxIdle || m.batch) {
		// The client was given this backend's PID: leaving in the middle
		// of a transaction ends that backend, as it would directly (and as
		// PgBouncer does), so no later client sees the same PID.
		m.detach()
		return Step{Release: ReleaseDiscard, End: true}
	}
	return m.cleanup()
}

// cleanup starts leaving the held connection clean for the next borrower:
// ending an open batch and transaction, and DISCARD ALL after session state.
func (m *Machine) cleanup() Step {
	out := m.out[:0]
	if m.batch {
		out = wire.AppendSync(out)
		m.busy.q.push(reply{kind: replyInternal, purpose: internalReset})
		m.batch = false
	}
	if m.tx != wire.TxIdle || len(out) > 0 {
		out = wire.AppendQuery(out, "ROLLBACK")
		m.busy.q.push(reply{kind: replyInternal, purpose: internalReset})
	}
	m.held = false // what is sent ends with a simple Query
	if m.pins != 0 || m.params.due() {
		out = wire.AppendQuery(out, "DISCARD ALL")
		m.busy.q.push(reply{kind: replyInternal, purpose: internalReset})
		m.pins = 0
		m.params.dirty, m.params.resetAll = nil, false
		m.srv.ForgetSetParams()
		m.srv.Prepared.Clear()
		m.srv.UnnamedKey = ""
	}
	if len(out) == 0 {
		return m.finishCleanup()
	}
	m.out = out
	return Step{ToServer: out}
}

// finishCleanup releases the connection once the cleanup is done.
func (m *Machine) finishCleanup() Step {
	rel := ReleaseReturn
	if m.tx != wire.TxIdle || m.sawFatal {
		rel = ReleaseDiscard
	}
	m.detach()
	return Step{Release: rel, End: true}
}

// ServerGone tells the machine the held connection failed (err from
// reading or writing it). The step discards it and ends the session,
// telling the client why unless the server already sent its own FATAL.
//
// In transaction mode a client that is not pinned survives it (a failover
// underneath it): what it was owed is answered with an error, 08007 when a
// request was in flight (it may or may not have committed), and an open
// transaction is failed until the client's ROLLBACK; its next transaction
// borrows afresh. A FATAL the server sent first (terminated, shutting
// down) reached the client as an ERROR for its request, so that request
// gets no second error. Pinned clients, whose session state lived on that
// connection, are ended with 08006.
func (m *Machine) ServerGone(err error) Step {
	if m.srv == nil {
		return Step{}
	}
	if !m.survivesServer() || m.sawFatal && !m.softFatal || m.gone {
		return m.serverBroken(err)
	}
	answered := m.softFatal // the client has its error for the first request
	owed, ends := 0, false
	for i := m.busy.q.head; i < len(m.busy.q.items); i++ {
		if m.busy.q.items[i].kind == replySync {
			owed++
			ends = ends || m.busy.q.items[i].ends
		}
	}
	// A COMMIT or ROLLBACK in flight ends the transaction whatever its
	// outcome (as a failed COMMIT does in PostgreSQL): drivers close a
	// connection left in a transaction after a failed COMMIT.
	inTx := m.tx != wire.TxIdle && !ends
	m.ending = false
	if m.minInTx {
		m.minLSN, m.minInTx = m.busy.minBefore, false // the transaction is lost: rolled back
	}
	m.detach()
	out := m.cout[:0]
	status := byte(wire.TxIdle)
	if inTx {
		status = wire.TxFailed
		m.lostTx = true
	}
	for i := range owed {
		if i > 0 || !answered {
			e := wire.Errorf(wire.CodeResolutionUnknown,
				"the connection to the database server was lost while a request was in flight; its outcome is unknown").Wrap(err)
			e.Hint = "The server may have failed over. Check whether the transaction committed before retrying it."
			if i > 0 {
				e = m.errLost()
			}
			out = e.Encode(out)
		}
		out = wire.AppendReadyForQuery(out, status)
	}
	m.cout = out
	return Step{ToClient: out, Release: ReleaseDiscard}
}

// survivesServer reports whether the client outlives a failure of its
// server connection: in transaction mode, when nothing ties its session
// to that connection.
func (m *Machine) survivesServer() bool {
	return m.cfg.Mode == ModeTransaction && m.pins == 0 && m.login == nil && !m.syncing
}

// rewriteParse returns a Parse body with its query replaced by sql: the
// statement name and the parameter types stay.
func rewriteParse(body []byte, sql string) []byte {
	name, rest, _ := bytes.Cut(body, []byte{0})
	_, tail, _ := bytes.Cut(rest, []byte{0})
	out := make([]byte, 0, len(name)+len(sql)+len(tail)+2)
	out = append(out, name...)
	out = append(out, 0)
	out = append(out, sql...)
	out = append(out, 0)
	return append(out, tail...)
}

// endsClass reports statements whose last ends a transaction.
func endsClass(c []sqlclass.Statement) bool {
	if len(c) == 0 {
		return false
	}
	switch c[len(c)-1].Command {
	case "COMMIT", "ROLLBACK":
		return true
	}
	return false
}

// lostReply answers a client message while its transaction is lost, as
// PostgreSQL answers in a failed transaction: ROLLBACK, or COMMIT (which
// PostgreSQL turns into a rollback there), ends it, in the simple or the
// extended protocol; anything else fails with errLost.
func (m *Machine) lostReply(typ byte, all int, body []byte) Step {
	m.forgetDecision() // answered here: nothing kept for the message
	out := m.cout[:0]
	switch typ {
	case wire.MsgQuery:
		sql, _, _ := bytes.Cut(body, []byte{0})
		if !endsTx(sql) {
			out = m.errLost().Encode(out)
			m.cout = wire.AppendReadyForQuery(out, wire.TxFailed)
			return Step{Skip: all, ToClient: m.cout}
		}
		m.lostTx = false
		out = wire.AppendMessage(out, wire.MsgCommandComplete, []byte("ROLLBACK\x00"))
		m.cout = wire.AppendReadyForQuery(out, wire.TxIdle)
		return Step{Skip: all, ToClient: m.cout}
	case wire.MsgSync:
		status := byte(wire.TxFailed)
		if m.lostEnded {
			status, m.lostTx = wire.TxIdle, false
		}
		m.lostEnd, m.lostEnded = false, false
		m.cout = wire.AppendReadyForQuery(out, status)
		return Step{Skip: all, ToClient: m.cout}
	case wire.MsgFlush, wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
		return Step{Skip: all}
	case wire.MsgParse:
		name, rest, _ := bytes.Cut(body, []byte{0})
		query, _, _ := bytes.Cut(rest, []byte{0})
		if endsTx(query) && m.stmts.define(name, rest) {
			m.lostEnd = true
			m.cout = append(out, wire.MsgParseComplete, 0, 0, 0, 4)
			return Step{Skip: all, ToClient: m.cout}
		}
	case wire.MsgBind:
		if _, name, ok := bindHead(body); ok && m.stmts.endsTx(name) {
			m.lostEnd = true
			m.cout = append(out, wire.MsgBindComplete, 0, 0, 0, 4)
			return Step{Skip: all, ToClient: m.cout}
		}
	case wire.MsgDescribe:
		if m.lostEnd {
			if len(body) > 0 && body[0] == 'S' {
				out = append(out, wire.MsgParameterDescription, 0, 0, 0, 6, 0, 0)
			}
			m.cout = append(out, wire.MsgNoData, 0, 0, 0, 4)
			return Step{Skip: all, ToClient: m.cout}
		}
	case wire.MsgExecute:
		if m.lostEnd {
			m.lostEnded = true
			m.cout = wire.AppendMessage(out, wire.MsgCommandComplete, []byte("ROLLBACK\x00"))
			return Step{Skip: all, ToClient: m.cout}
		}
	}
	m.lostEnd = false
	m.discarding = true
	m.cout = m.errLost().Encode(out)
	return Step{Skip: all, ToClient: m.cout}
}

func (m *Machine) errLost() *wire.Error {
	e := wire.Errorf(wire.CodeSerializationFailure,
		"the transaction was lost with its connection to the database server (a failover?); ROLLBACK and retry it")
	return e
}

// endsTx reports SQL that is only ROLLBACK, ABORT, COMMIT or END, which
// end a failed transaction (as a rollback).
func endsTx(sql []byte) bool {
	s := strings.ToLower(strings.TrimRight(strings.TrimSpace(string(sql)), "; \t\n"))
	s = strings.TrimSuffix(strings.TrimSuffix(s, " transaction"), " work")
	switch s {
	case "rollback", "abort", "commit", "end":
		return true
	}
	return false
}

// ServerBroke is ServerGone when part of a server message already went to
// the client: the client's stream cannot be resumed, and the session ends.
func (m *Machine) ServerBroke(err error) Step {
	if m.srv == nil {
		return Step{}
	}
	return m.serverBroken(err)
}

func (m *Machine) serverBroken(err error) Step {
	if m.sawFatal || m.gone {
		m.login = nil
		m.detach()
		return Step{Release: ReleaseDiscard, End: true}
	}
	e := wire.Fatalf(wire.CodeConnectionFailure, "server closed the connection unexpectedly").Wrap(err)
	if m.cfg.Mode == ModeTransaction && m.pins != 0 {
		// Session state lived on that connection: it cannot be rebuilt
		// on another one, so the session ends, saying why.
		e.Detail = "This session was pinned to its server connection (" + strings.Join(m.Pinned(), ", ") +
			"); that state cannot be rebuilt on another connection."
		e.Hint = "Reconnect; the server may have failed over."
	}
	return m.failServer(e)
}

// failServer discards the held connection and ends the session with e.
func (m *Machine) failServer(e *wire.Error) Step {
	m.login = nil
	m.detach()
	s := m.fatal(e)
	s.Release = ReleaseDiscard
	return s
}

// detach forgets the held connection.
func (m *Machine) detach() {
	m.srv = nil
	m.busy.q.reset()
	m.busy.copyEnds, m.busy.copies = 0, 0
	m.batch, m.held, m.copyIn, m.syncing, m.sawFatal, m.softFatal = false, false, false, false, false, false
	m.tx = wire.TxIdle
	m.txWrote, m.batchWrites, m.lsnDue = false, false, false
	m.sawCommit, m.sawRollback, m.reqErr = false, false, false
	m.putBusy()
}

// fatal ends the session with e, which the client receives.
func (m *Machine) fatal(e *wire.Error) Step {
	if !e.Fatal() {
		c := *e
		c.Severity = wire.SeverityFatal
		e = &c
	}
	m.cout = e.Encode(m.cout[:0])
	return Step{ToClient: m.cout, End: true, Err: e}
}

// PinBits returns the set of pin reasons as bits, cheap to compare: it
// changes exactly when Pinned does.
func (m *Machine) PinBits() uint32 { return uint32(m.pins) }

// LoggingIn reports a login waiting for its server exchange.
func (m *Machine) LoggingIn() bool { return m.login != nil }
