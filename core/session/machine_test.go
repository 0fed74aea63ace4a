package session

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/wire"
)

// The transcript tests drive a Machine with framed messages from both
// sides, without sockets, and check what it writes where and what it asks
// the engine to do.

// msg encodes one protocol message.
func msg(typ byte, parts ...any) []byte {
	var body []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string: // a C string
			body = append(append(body, v...), 0)
		case []byte: // raw bytes
			body = append(body, v...)
		case int16:
			body = binary.BigEndian.AppendUint16(body, uint16(v))
		case int32:
			body = binary.BigEndian.AppendUint32(body, uint32(v))
		case byte:
			body = append(body, v)
		default:
			panic(fmt.Sprintf("msg: %T", p))
		}
	}
	return wire.AppendMessage(nil, typ, body)
}

func query(sql string) []byte { return msg('Q', sql) }
func parse(name, sql string) []byte {
	return msg('P', name, sql, int16(0))
}
func bind(portal, stmt string, params ...string) []byte {
	parts := []any{portal, stmt, int16(0), int16(len(params))}
	for _, p := range params {
		parts = append(parts, int32(len(p)), []byte(p))
	}
	return msg('B', append(parts, int16(0))...)
}
func execute() []byte   { return msg('E', "", int32(0)) }
func syncMsg() []byte   { return msg('S') }
func rfq(s byte) []byte { return msg('Z', s) }
func cc(tag string) []byte {
	return msg('C', tag)
}
func errResp(code, text string) []byte {
	return msg('E', byte('S'), "ERROR", byte('V'), "ERROR", byte('C'), code, byte('M'), text, byte(0))
}

// types lists the message types in b, with the statement or portal names of
// Parse, Bind, Close and Describe: "P(sluice_1) B(,sluice_1) E S".
func types(b []byte) string { return typesOf(b, true) }

// typesOf is types for messages to the server (frontend) or to the client.
func typesOf(b []byte, frontend bool) string {
	var out []string
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:]))
		typ, body := b[0], b[5:1+n]
		s := string(typ)
		switch typ {
		case 'P':
			if !frontend {
				break
			}
			name, _, _ := bytes.Cut(body, []byte{0})
			s += "(" + string(name) + ")"
		case 'B':
			if !frontend {
				break
			}
			portal, rest, _ := bytes.Cut(body, []byte{0})
			name, _, _ := bytes.Cut(rest, []byte{0})
			s += "(" + string(portal) + "," + string(name) + ")"
		case 'C', 'D':
			if frontend && len(body) > 0 && (body[0] == 'S' || body[0] == 'P') {
				name, _, _ := bytes.Cut(body[1:], []byte{0})
				s += "(" + string(body[0]) + string(name) + ")"
			}
		case 'Q':
			if !frontend {
				break
			}
			s += "(" + strings.TrimSuffix(string(body), "\x00") + ")"
		case 'Z':
			s += string(body)
		}
		out = append(out, s)
		b = b[1+n:]
	}
	if len(b) > 0 {
		out = append(out, "<partial>")
	}
	return strings.Join(out, " ")
}

// harness runs a machine against scripted peers.
type harness struct {
	t   *testing.T
	m   *Machine
	srv *pool.ServerState
	// toServer and toClient accumulate what the machine sent, including the
	// forwarded parts of messages.
	toServer, toClient  []byte
	returned, discarded int
	// deferred: the machine defers its decisions, and the harness, as
	// the event-loop engine, asks the policy (asks counts the calls).
	deferred bool
	asks     int
}

// deferDecisions makes the harness's machine defer its decisions.
func (h *harness) deferDecisions() {
	h.m.DeferDecisions(true)
	h.deferred = true
}

// bothWays runs f with decisions made by the machine and deferred to the
// engine: they must behave the same.
func bothWays(t *testing.T, f func(t *testing.T, deferred bool)) {
	for _, deferred := range []bool{false, true} {
		name := "in-machine"
		if deferred {
			name = "deferred"
		}
		t.Run(name, func(t *testing.T) { f(t, deferred) })
	}
}

func newHarness(t *testing.T, mode Mode) *harness {
	cfg := &Config{Mode: mode, Track: map[string]bool{"search_path": true}, MaxPrepared: 10, MaxClientPrepared: 3}
	h := &harness{t: t, m: New(cfg, Key{ProcessID: 7, SecretKey: 9})}
	st := h.m.Login(nil, defaults(), noCache{})
	if mode == ModeSession {
		if st.Need != NeedServer {
			t.Fatalf("session-mode login: need %d", st.Need)
		}
		h.attach()
	}
	h.toClient = nil
	return h
}

func defaults() map[string]string {
	return map[string]string{"TimeZone": "UTC", "application_name": "", "server_version": "15.0", "DateStyle": "ISO, MDY"}
}

// noCache is a ParamCache that knows nothing.
type noCache struct{}

func (noCache) KnownParams(string) (map[string]string, bool) { return nil, false }
func (noCache) LearnParams(string, map[string]string)        {}

// newServer returns the bookkeeping of a fresh server connection.
func newServer() *pool.ServerState {
	r := defaults()
	p := make(map[string]string)
	for k, v := range r {
		p[k] = v
	}
	return &pool.ServerState{ProcessID: 4242, SecretKey: 1, Params: p, Reported: r}
}

func (h *harness) attach() {
	h.t.Helper()
	if h.srv == nil {
		h.srv = newServer()
	}
	h.apply(h.m.Attach(h.srv), nil, false)
}

// apply records a step for message m (from the client when fromClient).
func (h *harness) apply(st Step, m []byte, fromClient bool) Step {
	h.toServer = append(h.toServer, st.ToServer...)
	h.toClient = append(h.toClient, st.ToClient...)
	if m != nil && st.Need == NeedNothing && !st.End && st.Skip < len(m) {
		if fromClient {
			h.toServer = append(h.toServer, m[st.Skip:]...)
		} else {
			h.toClient = append(h.toClient, m[st.Skip:]...)
		}
	}
	switch st.Release {
	case ReleaseReturn:
		h.returned++
	case ReleaseDiscard:
		h.discarded++
		h.srv = nil
	}
	return st
}

// client offers a client message, borrowing a connection when asked.
func (h *harness) client(m []byte) Step {
	h.t.Helper()
	asked := false
	for range 4 {
		st := h.m.Client(m[0], len(m)-5, m[5:])
		if st.Need == NeedDecision {
			if !h.deferred || asked {
				h.t.Fatalf("NeedDecision for %q (deferred %v, asked already %v)", m[0], h.deferred, asked)
			}
			h.m.AskPolicy()
			h.asks++
			asked = true
			continue
		}
		if st.Need == NeedServer {
			h.attach()
			continue
		}
		if st.Need == NeedReplies {
			return st
		}
		return h.apply(st, m, true)
	}
	h.t.Fatalf("message %q offered four times", m[0])
	return Step{}
}

func (h *harness) server(msgs ...[]byte) Step {
	h.t.Helper()
	var st Step
	for _, m := range msgs {
		n := len(m) - 5
		st = h.apply(h.m.Server(m[0], n, m[5:]), m, false)
	}
	return st
}

// sent returns and clears what went to the server.
func (h *harness) sent() string  { s := types(h.toServer); h.toServer = nil; return s }
func (h *harness) toCli() string { s := typesOf(h.toClient, false); h.toClient = nil; return s }
func (h *harness) expect(want Expect) {
	h.t.Helper()
	if got := h.m.Expect(); got != want {
		h.t.Fatalf("Expect() = %d, want %d", got, want)
	}
}

func check(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got  %s\n want %s", what, got, want)
	}
}

func TestTranscriptSimpleQuery(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("SELECT 1"))
	check(t, "to server", h.sent(), "Q(SELECT 1)")
	h.expect(ExpectReplies)
	h.server(msg('T', int16(0)), msg('D', int16(0)), cc("SELECT 1"))
	st := h.server(rfq('I'))
	if st.Release != ReleaseReturn || h.m.Holding() {
		t.Fatalf("after ReadyForQuery I: release %d, holding %v", st.Release, h.m.Holding())
	}
	check(t, "to client", h.toCli(), "T D C ZI")
}

func TestTranscriptTransactionKeepsConnection(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	if !h.m.Holding() || h.returned != 0 {
		t.Fatal("connection released inside a transaction")
	}
	h.expect(ExpectNothing)
	h.client(query("COMMIT"))
	h.server(cc("COMMIT"), rfq('I'))
	if h.returned != 1 {
		t.Fatal("connection kept after COMMIT")
	}
}

func TestTranscriptLocalSyncAndFlush(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(msg('H'))
	h.client(syncMsg())
	check(t, "to client", h.toCli(), "ZI")
	check(t, "to server", h.sent(), "")
	if h.m.Holding() {
		t.Fatal("Sync borrowed a connection")
	}
}

func TestTranscriptNamedStatementAcrossConnections(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	// Pipelined: Parse, Bind, Execute, Sync in one go.
	h.client(parse("s1", "SELECT $1::int"))
	h.client(bind("", "s1", "42"))
	h.client(execute())
	h.client(syncMsg())
	check(t, "to server", h.sent(), "P(sluice_1) B(,sluice_1) E S")
	h.server(msg('1'), msg('2'), msg('D', int16(0)), cc("SELECT 1"), rfq('I'))
	check(t, "to client", h.toCli(), "1 2 D C ZI")
	if h.returned != 1 {
		t.Fatal("not returned after Sync")
	}
	// Next transaction on a different connection: the statement is prepared
	// there under Sluice's name, its ParseComplete swallowed.
	h.srv = newServer()
	h.client(bind("", "s1", "7"))
	h.client(execute())
	h.client(syncMsg())
	check(t, "to server", h.sent(), "P(sluice_1) B(,sluice_1) E S")
	h.server(msg('1'), msg('2'), cc("SELECT 1"), rfq('I'))
	check(t, "to client", h.toCli(), "2 C ZI")
	// Same connection again: a Parse of a statement it already has becomes
	// a Close of nothing whose CloseComplete is the client's ParseComplete.
	h.client(parse("s2", "SELECT $1::int"))
	h.client(syncMsg())
	check(t, "to server", h.sent(), "C(Ssluice_noop) S")
	h.server(msg('3'), rfq('I'))
	check(t, "to client", h.toCli(), "1 ZI")
}

func TestTranscriptErrorInTheMiddleOfABatch(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(parse("bad", "SELECT nosuch"))
	h.client(bind("", "bad"))
	h.client(execute())
	h.client(syncMsg())
	h.sent()
	h.server(errResp("42703", "column does not exist"), rfq('I'))
	check(t, "to client", h.toCli(), "E ZI")
	// The statement does not exist, for Sluice as for PostgreSQL.
	h.client(bind("", "bad"))
	check(t, "to server", h.sent(), "B(,bad)")
	if _, ok := h.m.stmts.prepared["bad"]; ok {
		t.Fatal("a statement whose Parse failed is still known")
	}
}

func TestTranscriptBigBindRewritesOnlyItsHead(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(parse("s1", "SELECT $1::text"))
	h.client(syncMsg())
	h.server(msg('1'), rfq('I'))
	h.sent()
	h.toCli()
	big := strings.Repeat("x", 100<<10)
	b := bind("p", "s1", big)
	st := h.m.Client(b[0], len(b)-5, b[5:5+h.m.ClientNeeds(b[0], len(b)-5)])
	if st.Need == NeedServer {
		h.attach()
		st = h.m.Client(b[0], len(b)-5, b[5:5+h.m.ClientNeeds(b[0], len(b)-5)])
	}
	if need := h.m.ClientNeeds(b[0], len(b)-5); need >= len(b)-5 {
		t.Fatalf("ClientNeeds = %d for a %d-byte Bind: it would be buffered whole", need, len(b))
	}
	h.apply(st, b, true)
	out := h.toServer
	h.toServer = nil
	// The server gets its own statement's Parse, then a Bind of sluice_N
	// with the client's parameter bytes untouched and a correct length.
	check(t, "to server", types(out), "B(p,sluice_1)")
	last := out[bytes.LastIndexByte(out[:len(out)-len(big)], 'B'):]
	if n := int(binary.BigEndian.Uint32(last[1:])); n+1 != len(last) {
		t.Fatalf("rewritten Bind says %d bytes, has %d", n+1, len(last))
	}
	if !bytes.Contains(last, []byte(big)) {
		t.Fatal("parameter bytes changed")
	}
}

func TestTranscriptCopyIn(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("COPY t FROM STDIN"))
	h.sent()
	h.server(msg('G', byte(0), int16(0)))
	h.expect(ExpectMaybe) // the server waits for data, or reports an error in it
	h.client(msg('d', []byte("1\n")))
	h.client(msg('c'))
	check(t, "to server", h.sent(), "d c")
	h.expect(ExpectReplies)
	h.server(cc("COPY 1"), rfq('I'))
	check(t, "to client", h.toCli(), "G C ZI")
	if h.returned != 1 {
		t.Fatal("not returned after COPY")
	}
}

func TestTranscriptExtendedCopyInIgnoresSync(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(parse("", "COPY t FROM STDIN"))
	h.client(bind("", ""))
	h.client(execute())
	h.client(syncMsg()) // ignored by the server in copy-in mode
	h.server(msg('1'), msg('2'), msg('G', byte(0), int16(0)))
	h.client(msg('d', []byte("1\n")))
	h.client(msg('c'))
	h.client(syncMsg())
	h.server(cc("COPY 1"), rfq('I'))
	if h.returned != 1 || h.m.Holding() {
		t.Fatalf("after extended COPY: returned %d, holding %v", h.returned, h.m.Holding())
	}
}

// A client that sends its COPY data after the server refused the COPY (as
// pgx does with a slow reader): the server drops it, and the next COPY
// waits for its own data.
func TestTranscriptCopyDataAfterRefusedCopy(t *testing.T) {
	h := newHarness(t, ModeSession)
	h.client(query("COPY nosuchtable FROM STDIN"))
	h.server(errResp("42P01", "relation does not exist"), rfq('I'))
	h.client(msg('d', []byte("1\n")))
	h.client(msg('c')) // dropped by the server: nothing owed
	h.expect(ExpectMaybe)
	h.client(query("COPY t FROM STDIN"))
	h.server(msg('G', byte(0), int16(0)))
	h.expect(ExpectMaybe) // waits for this COPY's data, not for a reply
	h.client(msg('d', []byte("1\n")))
	h.client(msg('c'))
	h.expect(ExpectReplies)
	h.server(cc("COPY 1"), rfq('I'))
	h.expect(ExpectMaybe)
}

// A pipeline without Sync: the server may hold its replies back until it
// has more input, so the client is read meanwhile, and before the engine
// waits for the server it sends one Flush.
func TestTranscriptPipelineWithoutSyncIsNotAwaited(t *testing.T) {
	h := newHarness(t, ModeSession)
	h.client(query("SELECT 1"))
	h.expect(ExpectReplies) // a simple Query's answer is sent at once
	h.client(parse("", "SELECT 2"))
	h.client(bind("", ""))
	h.client(execute())
	h.expect(ExpectMaybe) // the Query's answer is owed, the rest may be held
	if f := h.m.Unstall(); types(f) != "H" {
		t.Fatalf("Unstall = %q, want a Flush", types(f))
	}
	if f := h.m.Unstall(); f != nil {
		t.Fatal("a second Flush with nothing sent since")
	}
	h.expect(ExpectReplies)
	h.client(execute())
	h.client(msg('H'))
	h.expect(ExpectReplies)
	h.client(syncMsg())
	if f := h.m.Unstall(); f != nil {
		t.Fatal("Flush after a Sync")
	}
	h.server(cc("SELECT 1"), rfq('I'), msg('1'), msg('2'), cc("SELECT 1"), cc("SELECT 1"), rfq('I'))
	check(t, "to client", h.toCli(), "C ZI 1 2 C C ZI")
	h.expect(ExpectMaybe)
}

func TestTranscriptCopyOut(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("COPY t TO STDOUT"))
	h.server(msg('H', byte(0), int16(0)), msg('d', []byte("1\n")), msg('c'), cc("COPY 1"), rfq('I'))
	check(t, "to client", h.toCli(), "H d c C ZI")
}

func TestTranscriptPinAndUnpin(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("LISTEN x"))
	h.server(cc("LISTEN"), rfq('I'))
	if h.returned != 0 || !h.m.Holding() {
		t.Fatal("LISTEN did not pin")
	}
	check(t, "pins", strings.Join(h.m.Pinned(), ","), "LISTEN")
	h.expect(ExpectMaybe) // notifications may come
	h.server(msg('A', int32(1), "x", ""))
	check(t, "to client", h.toCli(), "C ZI A")
	h.client(query("UNLISTEN *"))
	h.server(cc("UNLISTEN"), rfq('I'))
	if h.returned != 1 {
		t.Fatal("UNLISTEN * did not unpin")
	}
}

func TestTranscriptTrackedSetIsReadBack(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("SET search_path = a"))
	h.server(cc("SET"), rfq('I'))
	check(t, "to server", h.sent(), "Q(SET search_path = a) Q(SELECT pg_catalog.current_setting(E'search_path'))")
	if h.returned != 0 {
		t.Fatal("returned before the read-back")
	}
	check(t, "to client", h.toCli(), "C ZI")
	h.server(msg('T', int16(1)), msg('D', int16(1), int32(1), []byte("a")), cc("SELECT 1"), rfq('I'))
	check(t, "to client", h.toCli(), "") // Sluice's own exchange stays Sluice's
	if h.returned != 1 || h.m.params.values["search_path"] != "a" {
		t.Fatalf("after read-back: returned %d, search_path %q", h.returned, h.m.params.values["search_path"])
	}
	// The next connection gets the value before the client's message.
	h.srv = newServer()
	st := h.m.Client('Q', len("SELECT 1")+1, []byte("SELECT 1\x00"))
	if st.Need != NeedServer {
		t.Fatalf("need %d", st.Need)
	}
	h.attach()
	check(t, "sync", h.sent(), "Q(SELECT pg_catalog.set_config(E'search_path', E'a', false);)")
	if st := h.m.Client('Q', len("SELECT 1")+1, []byte("SELECT 1\x00")); st.Need != NeedReplies {
		t.Fatalf("client message during sync: need %d, want NeedReplies", st.Need)
	}
	h.server(msg('T', int16(1)), msg('D', int16(1), int32(1), []byte("a")), cc("SELECT 1"), rfq('I'))
	if h.returned != 1 || !h.m.Holding() {
		t.Fatalf("after sync: returned %d, holding %v", h.returned, h.m.Holding())
	}
	h.client(query("SELECT 1"))
	check(t, "to server", h.sent(), "Q(SELECT 1)")
}

func TestTranscriptRejectLocallyAndHeld(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	for i := 1; i <= 3; i++ {
		h.client(parse(fmt.Sprintf("s%d", i), fmt.Sprintf("SELECT %d", i)))
	}
	h.client(syncMsg())
	h.server(msg('1'), msg('1'), msg('1'), rfq('I'))
	h.sent()
	h.toCli()
	// Held, in the middle of a batch: the server raises the error itself.
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.toCli()
	h.sent()
	h.client(bind("", "s1"))
	h.client(parse("s4", "SELECT 4"))
	h.client(execute()) // skipped after the error
	h.client(syncMsg())
	check(t, "to server", h.sent(), "B(,sluice_1) P() B(,) E S")
	h.server(msg('2'), msg('1'), msg('2'), errResp("53400", "too many"), rfq('E'))
	check(t, "to client", h.toCli(), "2 E ZE")
	h.client(query("ROLLBACK"))
	h.server(cc("ROLLBACK"), rfq('I'))
	h.toCli()
	h.sent()
	// Not held: answered by the machine, and the batch is skipped to Sync.
	h.client(parse("s5", "SELECT 5"))
	h.client(bind("", "s5"))
	h.client(syncMsg())
	check(t, "to client", h.toCli(), "E ZI")
	check(t, "to server", h.sent(), "")
}

func TestTranscriptDeallocateAnsweredLocally(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(parse("s1", "SELECT 1"))
	h.client(syncMsg())
	h.server(msg('1'), rfq('I'))
	h.toCli()
	h.sent()
	h.client(query("DEALLOCATE s1"))
	check(t, "to client", h.toCli(), "C ZI")
	check(t, "to server", h.sent(), "")
}

func TestTranscriptClientLeavesMidQuery(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("SELECT pg_sleep(10)"))
	st := h.m.ClientGone()
	if !st.Cancel || st.Release != ReleaseDiscard || !st.End {
		t.Fatalf("client gone mid-query: %+v", st)
	}
}

func TestTranscriptClientLeavesInTransaction(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.sent()
	h.apply(h.m.ClientGone(), nil, false)
	check(t, "cleanup", h.sent(), "Q(ROLLBACK)")
	st := h.server(cc("ROLLBACK"), rfq('I'))
	if st.Release != ReleaseReturn || !st.End {
		t.Fatalf("after cleanup: %+v", st)
	}
	check(t, "to client", h.toCli(), "C ZT")
}

// In session mode the client holds a real backend's PID: leaving inside a
// transaction ends that backend instead of handing it to the next client.
func TestTranscriptSessionClientLeavesInTransaction(t *testing.T) {
	h := newHarness(t, ModeSession)
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.sent()
	st := h.m.ClientGone()
	if st.Release != ReleaseDiscard || !st.End || len(st.ToServer) != 0 {
		t.Fatalf("session client gone in a transaction: %+v", st)
	}
}

func TestTranscriptSessionModeKeyAndPassThrough(t *testing.T) {
	cfg := &Config{Mode: ModeSession, MaxPrepared: 2}
	m := New(cfg, Key{ProcessID: 7, SecretKey: 9})
	st := m.Login(nil, defaults(), noCache{})
	if st.Need != NeedServer {
		t.Fatal("session mode login did not borrow")
	}
	st = m.Attach(newServer())
	if m.Key() != (Key{ProcessID: 4242, SecretKey: 9}) {
		t.Fatalf("key %+v: want the server's process ID with Sluice's secret", m.Key())
	}
	if !strings.Contains(types(st.ToClient), "K") {
		t.Fatalf("login answer %s", types(st.ToClient))
	}
	p := parse("s1", "SELECT 1")
	if st := m.Client(p[0], len(p)-5, nil); st.Skip != 0 || len(st.ToServer) != 0 {
		t.Fatalf("session mode rewrote a Parse: %+v", st)
	}
}

func TestTranscriptLoginValidatesStartupParameters(t *testing.T) {
	cfg := &Config{Mode: ModeTransaction, MaxPrepared: 2}
	m := New(cfg, Key{ProcessID: 7, SecretKey: 9})
	st := m.Login([]wire.Param{{Name: "timezone", Value: "utc"}}, defaults(), noCache{})
	if st.Need != NeedServer {
		t.Fatal("unvalidated parameters answered without a server")
	}
	srv := newServer()
	st = m.Attach(srv)
	if got := types(st.ToServer); !strings.Contains(got, "set_config(E'TimeZone', E'utc'") {
		t.Fatalf("login sync %s", got)
	}
	m.Server('S', 0, []byte("TimeZone\x00UTC\x00"))
	st = m.Server('Z', 1, []byte{'I'})
	if st.Release != ReleaseReturn || !strings.Contains(string(st.ToClient), "TimeZone\x00UTC\x00") {
		t.Fatalf("login answer: release %d, %q", st.Release, st.ToClient)
	}
	// A bad value gets the server's own error, as FATAL.
	m = New(cfg, Key{ProcessID: 7, SecretKey: 9})
	m.Login([]wire.Param{{Name: "DateStyle", Value: "garbage"}}, defaults(), noCache{})
	m.Attach(newServer())
	eb := errResp("22023", `invalid value for parameter "DateStyle": "garbage"`)
	m.Server('E', len(eb)-5, eb[5:])
	st = m.Server('Z', 1, []byte{'I'})
	if !st.End || st.Err == nil || st.Err.Code != "22023" || !st.Err.Fatal() {
		t.Fatalf("bad startup parameter: %+v", st)
	}
}

func TestTranscriptPreparedStatementPaths(t *testing.T) {
	bothWays(t, testTranscriptPreparedStatementPaths)
}

func testTranscriptPreparedStatementPaths(t *testing.T, deferred bool) {
	h := newHarness(t, ModeTransaction)
	if deferred {
		h.deferDecisions()
		defer func() {
			if h.asks == 0 {
				t.Error("no decision deferred")
			}
		}()
	}
	h.m.stmts.maxServer = 2
	// Describe of a named statement goes under the server's name.
	h.client(parse("a", "SELECT 1"))
	h.client(msg('D', byte('S'), "a"))
	h.client(syncMsg())
	check(t, "describe", h.sent(), "P(sluice_1) D(Ssluice_1) S")
	h.server(msg('1'), msg('t', int16(0)), msg('n'), rfq('I'))
	check(t, "describe replies", h.toCli(), "1 t n ZI")

	// A second Parse of the same name: the server reports 42P05 itself.
	h.client(parse("a", "SELECT 2"))
	h.client(syncMsg())
	check(t, "duplicate", h.sent(), "P(a) P(a) S")
	h.server(msg('1'), errResp("42P05", `prepared statement "a" already exists`), rfq('I'))
	check(t, "duplicate replies", h.toCli(), "E ZI")
	// Eviction beyond max_prepared_statements: the oldest is closed first;
	// the leftover copy of "a" is closed at the start of the batch.
	h.client(parse("b", "SELECT 3"))
	h.client(parse("c", "SELECT 4"))
	h.client(syncMsg())
	check(t, "eviction", h.sent(), "C(Sa) P(sluice_2) C(Ssluice_1) P(sluice_3) S")
	h.server(msg('3'), msg('1'), msg('3'), msg('1'), rfq('I'))
	check(t, "eviction replies", h.toCli(), "1 1 ZI")
	// The evicted statement is prepared again when bound.
	h.client(bind("", "a"))
	h.client(syncMsg())
	check(t, "re-prepare", h.sent(), "C(Ssluice_2) P(sluice_4) B(,sluice_4) S")
	h.server(msg('3'), msg('1'), msg('2'), rfq('I'))
	check(t, "re-prepare replies", h.toCli(), "2 ZI")

	// Close of a client statement: the server keeps its copy for others.
	h.client(msg('C', byte('S'), "b"))
	h.client(syncMsg())
	check(t, "close", h.sent(), "C(Ssluice_noop) S")
	h.server(msg('3'), rfq('I'))
	check(t, "close replies", h.toCli(), "3 ZI")
	if _, ok := h.m.stmts.prepared["b"]; ok {
		t.Fatal("closed statement still known")
	}
}

func TestTranscriptUnnamedStatementFollowsTheClient(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(parse("", "SELECT $1::int"))
	h.client(syncMsg())
	h.server(msg('1'), rfq('I'))
	h.sent()
	h.toCli()
	// Another client used the connection's unnamed statement meanwhile.
	h.srv.UnnamedKey = "someone else's"
	h.client(bind("", "", "1"))
	h.client(execute())
	h.client(syncMsg())
	check(t, "recreated", h.sent(), "P() B(,) E S")
	h.server(msg('1'), msg('2'), cc("SELECT 1"), rfq('I'))
	check(t, "replies", h.toCli(), "2 C ZI")
	// A simple Query destroys it, for Sluice as for PostgreSQL.
	h.client(query("SELECT 1"))
	h.server(cc("SELECT 1"), rfq('I'))
	if h.m.stmts.unnamed != nil {
		t.Fatal("unnamed statement survived a simple Query")
	}
}

// The borrow of a transaction costs no allocation in the machine beyond the
// classifier's own (none for a plain SELECT).
func TestSimpleTransactionDoesNotAllocate(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	q := query("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	z := rfq('I')
	srv := newServer()
	h.m.Attach(srv)
	h.m.detach()
	allocs := testing.AllocsPerRun(100, func() {
		st := h.m.Client(q[0], len(q)-5, q[5:])
		if st.Need == NeedServer {
			h.m.Attach(srv)
			h.m.Client(q[0], len(q)-5, q[5:])
		}
		h.m.Server(z[0], 1, z[5:])
	})
	if allocs > 0 {
		t.Fatalf("a transaction allocates %.1f times in the machine", allocs)
	}
}

// rejectPolicy refuses every statement.
type rejectPolicy struct{}

func (rejectPolicy) Decide(*Statement) Decision {
	return Decision{Reject: wire.Errorf(wire.CodeFeatureNotSupported, "refused by policy")}
}

// An idle machine keeps no busy state (reply queue, classification, policy
// decision): not after its login, a transaction, a borrow that failed or a
// statement the policy refused. It has one while it holds a connection and
// while its statement waits for the borrow it asked for.
func TestIdleMachineKeepsNoBusyState(t *testing.T) { bothWays(t, testIdleMachineKeepsNoBusyState) }

func testIdleMachineKeepsNoBusyState(t *testing.T, deferred bool) {
	h := newHarness(t, ModeTransaction)
	if deferred {
		h.deferDecisions()
	}
	idle := func(when string) {
		t.Helper()
		if h.m.busy != nil {
			t.Fatalf("%s: the idle machine keeps a busy state", when)
		}
	}
	idle("after the login")
	h.client(query("SELECT 1"))
	h.server(cc("SELECT 1"), rfq('I'))
	idle("after a transaction")
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	if h.m.busy == nil {
		t.Fatal("a machine inside a transaction has no busy state")
	}
	h.client(query("COMMIT"))
	h.server(cc("COMMIT"), rfq('I'))
	idle("after COMMIT")
	q := query("SELECT 2")
	if deferred {
		if st := h.m.Client(q[0], len(q)-5, q[5:]); st.Need != NeedDecision || h.m.busy == nil {
			t.Fatalf("a statement waiting for its decision: need %d, busy state %v", st.Need, h.m.busy != nil)
		}
		h.m.AskPolicy()
	}
	if st := h.m.Client(q[0], len(q)-5, q[5:]); st.Need != NeedServer || h.m.busy == nil {
		t.Fatalf("a statement waiting for its borrow: need %d, busy state %v", st.Need, h.m.busy != nil)
	}
	h.m.Refuse(q[0], len(q)-5, wire.Errorf(wire.CodeTooManyConnections, "no connection"))
	idle("after a failed borrow")
	h.toCli()
	h.m.SetPolicy(rejectPolicy{})
	h.client(query("SELECT 3"))
	check(t, "to client", h.toCli(), "E ZI")
	idle("after a statement the policy refused")
}

// A server lost under an unpinned transaction-mode client: what was in
// flight gets 08007 and the client stays; an open transaction is failed
// until ROLLBACK, answered by Sluice; the next transaction borrows afresh.
func TestTranscriptServerLostUnderTransaction(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.toCli()
	h.client(query("INSERT INTO t VALUES (1)"))
	h.sent()
	st := h.m.ServerGone(fmt.Errorf("EOF"))
	if st.End || st.Release != ReleaseDiscard || h.m.Holding() {
		t.Fatalf("server lost: %+v", st)
	}
	check(t, "to client", typesOf(st.ToClient, false), "E ZE")
	if !bytes.Contains(st.ToClient, []byte("08007")) {
		t.Fatal("not 08007")
	}
	st = h.m.Client('Q', len(query("SELECT 1"))-5, query("SELECT 1")[5:])
	check(t, "inside the lost transaction", typesOf(st.ToClient, false), "E ZE")
	if !bytes.Contains(st.ToClient, []byte("40001")) || st.Need != NeedNothing {
		t.Fatalf("inside the lost transaction: %+v", st)
	}
	rb := query("ROLLBACK")
	st = h.m.Client('Q', len(rb)-5, rb[5:])
	check(t, "ROLLBACK", typesOf(st.ToClient, false), "C ZI")
	q := query("SELECT 1")
	if st := h.m.Client('Q', len(q)-5, q[5:]); st.Need != NeedServer {
		t.Fatalf("after ROLLBACK: %+v, want a borrow", st)
	}
}

// A lost transaction ends with a ROLLBACK or COMMIT in the extended
// protocol too (as drivers send them), answered as PostgreSQL answers a
// failed transaction's: ParseComplete, BindComplete, CommandComplete
// "ROLLBACK", and ReadyForQuery 'I'. Other statements fail until then.
func TestTranscriptLostTransactionEndsInExtendedProtocol(t *testing.T) {
	for _, end := range []string{"rollback", "COMMIT", "end transaction"} {
		h := newHarness(t, ModeTransaction)
		h.client(query("BEGIN"))
		h.server(cc("BEGIN"), rfq('T'))
		h.toCli()
		h.client(query("INSERT INTO t VALUES (1)"))
		h.sent()
		h.m.ServerGone(fmt.Errorf("EOF"))
		h.toClient = nil
		// A statement in the lost transaction fails; its batch is skipped.
		h.client(parse("", "SELECT 1"))
		h.client(bind("", ""))
		h.client(execute())
		h.client(syncMsg())
		check(t, "a statement in the lost transaction", h.toCli(), "E ZE")
		h.client(parse("", end))
		h.client(bind("", ""))
		h.client(msg('D', byte('P'), ""))
		h.client(execute())
		h.client(syncMsg())
		check(t, end+" in the extended protocol", h.toCli(), "1 2 n C ZI")
		if h.sent() != "" {
			t.Fatalf("%s: sent to a server", end)
		}
		if st := h.m.Client('Q', len(query("SELECT 1"))-5, query("SELECT 1")[5:]); st.Need != NeedServer {
			t.Fatalf("after %s: %+v, want a borrow", end, st)
		}
	}
}

// A COMMIT in flight when the server is lost: 08007 (its outcome is
// unknown), and the client is out of its transaction, as after a failed
// COMMIT in PostgreSQL.
func TestTranscriptServerLostUnderCommit(t *testing.T) {
	for _, extended := range []bool{false, true} {
		h := newHarness(t, ModeTransaction)
		h.client(query("BEGIN"))
		h.server(cc("BEGIN"), rfq('T'))
		h.toCli()
		if extended {
			h.client(parse("", "COMMIT"))
			h.client(bind("", ""))
			h.client(execute())
			h.client(syncMsg())
		} else {
			h.client(query("COMMIT"))
		}
		h.sent()
		st := h.m.ServerGone(fmt.Errorf("EOF"))
		check(t, "COMMIT lost", typesOf(st.ToClient, false), "E ZI")
		if !bytes.Contains(st.ToClient, []byte("08007")) {
			t.Fatal("not 08007")
		}
		if st := h.m.Client('Q', len(query("SELECT 1"))-5, query("SELECT 1")[5:]); st.Need != NeedServer {
			t.Fatalf("after the lost COMMIT: %+v, want a borrow", st)
		}
	}
}

// A server's FATAL for a request in flight (the backend terminated, the
// server shutting down) reaches an unpinned transaction-mode client as an
// ERROR with the server's SQLSTATE; when the connection then closes, the
// client is owed nothing more and lives on.
func TestTranscriptServerFatalBecomesError(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("SELECT pg_sleep(10)"))
	h.sent()
	fatal := msg('E', byte('S'), "FATAL", byte('V'), "FATAL", byte('C'), "57P01", byte('M'), "terminating connection due to administrator command", byte(0))
	h.server(fatal)
	got := h.toClient
	h.toClient = nil
	if !bytes.Contains(got, []byte("SERROR\x00")) || !bytes.Contains(got, []byte("57P01")) || bytes.Contains(got, []byte("FATAL")) {
		t.Fatalf("to client: %q, want an ERROR with 57P01", got)
	}
	st := h.m.ServerGone(fmt.Errorf("EOF"))
	if st.End {
		t.Fatal("the client was ended")
	}
	check(t, "after the connection closed", typesOf(st.ToClient, false), "ZI")
}

// Pinned clients' state lived on the lost connection: they are ended.
func TestTranscriptServerLostUnderPinnedClient(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("LISTEN x"))
	h.server(cc("LISTEN"), rfq('I'))
	st := h.m.ServerGone(fmt.Errorf("EOF"))
	if !st.End {
		t.Fatalf("pinned client survived its server: %+v", st)
	}
	if !bytes.Contains(st.ToClient, []byte("08006")) || !bytes.Contains(st.ToClient, []byte("LISTEN")) {
		t.Fatalf("to client %q: want 08006 naming the pin", st.ToClient)
	}
}

// rewritePolicy rewrites statements that select from "old" to select from
// "new", as a filter's rewrite decision does.
type rewritePolicy struct{}

func (rewritePolicy) Decide(st *Statement) Decision {
	if strings.Contains(st.SQL, "FROM old") {
		return Decision{Rewrite: strings.ReplaceAll(st.SQL, "FROM old", "FROM new")}
	}
	return Decision{}
}

// A policy's rewrite replaces the text the server receives, for a simple
// Query and for a Parse (whose name and parameter types stay); the
// classifier's verdict on the new text decides session effects.
func TestTranscriptRewrite(t *testing.T) { bothWays(t, testTranscriptRewrite) }

func testTranscriptRewrite(t *testing.T, deferred bool) {
	h := newHarness(t, ModeTransaction)
	if deferred {
		h.deferDecisions()
	}
	h.m.SetPolicy(rewritePolicy{})
	h.client(query("SELECT * FROM old"))
	got := string(h.toServer)
	h.toServer = nil
	if !strings.Contains(got, "SELECT * FROM new") || strings.Contains(got, "FROM old") {
		t.Fatalf("to server %q, want the rewritten query", got)
	}
	h.server(cc("SELECT 0"), rfq('I'))
	h.toCli()

	h.client(parse("s1", "SELECT $1::int FROM old"))
	h.client(bind("", "s1", "7"))
	h.client(execute())
	h.client(syncMsg())
	got = string(h.toServer)
	if !strings.Contains(got, "SELECT $1::int FROM new") || strings.Contains(got, "FROM old") {
		t.Fatalf("to server %q, want the rewritten Parse", got)
	}
	check(t, "rewritten Parse, then Bind", types(h.toServer), "P(sluice_1) B(,sluice_1) E S")
	h.toServer = nil

	// A rewrite into a SET of a tracked parameter is tracked as such.
	h.server(msg('1'), msg('2'), cc("SELECT 1"), rfq('I'))
	h.toCli()
	h.m.SetPolicy(setPolicy{})
	h.client(query("SELECT 1"))
	if !strings.Contains(string(h.toServer), "SET search_path = x") {
		t.Fatalf("to server %q", h.toServer)
	}
	if !h.m.params.dirty["search_path"] || h.m.pins != 0 {
		t.Fatalf("the rewritten SET is not tracked (dirty %v, pins %v)", h.m.params.dirty, h.m.pins)
	}
}

type setPolicy struct{}

func (setPolicy) Decide(st *Statement) Decision {
	return Decision{Rewrite: "SET search_path = x"}
}

// countingPolicy counts its calls.
type countingPolicy struct{ n *int }

func (c countingPolicy) Decide(*Statement) Decision { *c.n++; return Decision{} }

// The policy is asked once per statement, not again when the statement
// that asked for a borrow is offered with the connection.
func TestPolicyAskedOncePerStatement(t *testing.T) { bothWays(t, testPolicyAskedOncePerStatement) }

func testPolicyAskedOncePerStatement(t *testing.T, deferred bool) {
	h := newHarness(t, ModeTransaction)
	if deferred {
		h.deferDecisions()
	}
	var n int
	h.m.SetPolicy(countingPolicy{&n})
	defer func() {
		if deferred && h.asks != n {
			t.Errorf("%d policy calls, %d of them asked for by NeedDecision", n, h.asks)
		}
	}()
	h.client(query("SELECT 1"))
	h.server(cc("SELECT 1"), rfq('I'))
	if n != 1 {
		t.Fatalf("autocommit statement: %d policy calls, want 1", n)
	}
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.client(query("SELECT 2"))
	h.server(cc("SELECT 1"), rfq('T'))
	if n != 3 {
		t.Fatalf("after a transaction's BEGIN and one statement: %d calls, want 3", n)
	}
}

// A deferred decision leaves the machine as it was: the statements to
// close at the start of the next batch (here the leftover copy of a
// name prepared twice inside a transaction) go out once, with the
// statement that asked for the decision.
func TestDeferredDecisionChangesNothing(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.deferDecisions()
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.client(parse("a", "SELECT 1"))
	h.client(syncMsg())
	h.server(msg('1'), rfq('T'))
	h.client(parse("a", "SELECT 2"))
	h.client(syncMsg())
	check(t, "duplicate", h.sent(), "Q(BEGIN) P(sluice_1) S P(a) P(a) S")
	h.server(msg('1'), errResp("42P05", `prepared statement "a" already exists`), rfq('E'))
	h.toCli()
	asks := h.asks
	h.client(query("ROLLBACK"))
	if h.asks != asks+1 {
		t.Fatalf("ROLLBACK: %d decisions asked for, want 1", h.asks-asks)
	}
	check(t, "ROLLBACK after the duplicate", h.sent(), "C(Sa) Q(ROLLBACK)")
}

// Every execution of a prepared statement that borrows a connection is
// shown to the policy: the decision its first Bind was made by is used
// up, not kept for the next Bind of the same statement (a policy that
// starts refusing it is obeyed), and an idle machine keeps no busy state
// after a Bind-led transaction.
func TestBindAskedEachBorrow(t *testing.T) {
	bothWays(t, func(t *testing.T, deferred bool) {
		h := newHarness(t, ModeTransaction)
		if deferred {
			h.deferDecisions()
		}
		var n int
		h.m.SetPolicy(countingPolicy{&n})
		h.client(parse("s", "SELECT 1"))
		h.client(syncMsg())
		h.server(msg('1'), rfq('I'))
		h.toCli()
		for round := 1; round <= 3; round++ {
			h.client(bind("", "s"))
			h.client(execute())
			h.client(syncMsg())
			h.server(msg('1'), msg('2'), cc("SELECT 1"), rfq('I'))
			h.toCli()
			if n != 1+round {
				t.Fatalf("round %d: %d policy calls, want %d", round, n, 1+round)
			}
			if h.m.busy != nil {
				t.Fatalf("round %d: the idle machine keeps a busy state", round)
			}
		}
		h.m.SetPolicy(rejectPolicy{})
		h.client(bind("", "s"))
		h.client(execute())
		h.client(syncMsg())
		check(t, "a Bind the policy now refuses", h.toCli(), "E ZI")
	})
}

// A classification is kept only for the text it was made of: a statement
// whose decision was asked for, then answered by Sluice itself (here a
// DEALLOCATE that could not be answered while a reply was owed, then
// could), leaves nothing that the next statement, a SET of a tracked
// parameter, is taken for.
func TestClassificationBelongsToItsText(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.deferDecisions()
	h.client(parse("a", "SELECT 1"))
	h.client(syncMsg())
	h.server(msg('1'), rfq('I'))
	h.toCli()
	h.client(query("SELECT 2")) // a reply owed: the DEALLOCATE cannot be answered yet
	h.sent()
	d := query("DEALLOCATE a")
	if st := h.m.Client(d[0], len(d)-5, d[5:]); st.Need != NeedDecision {
		t.Fatalf("DEALLOCATE behind an owed reply: need %d, want NeedDecision", st.Need)
	}
	// The engine should offer it again at once; the machine must cope
	// even when the server's replies come first and the connection goes.
	h.server(msg('T', int16(0)), cc("SELECT 1"), rfq('I'))
	h.toCli()
	if h.m.Holding() {
		t.Fatal("the connection was not released")
	}
	h.client(d)
	check(t, "DEALLOCATE answered by Sluice", h.toCli(), "C ZI")
	h.client(query("SET search_path = evil"))
	if !h.m.params.dirty["search_path"] {
		t.Fatalf("the SET after the DEALLOCATE was not tracked (sent %s)", h.sent())
	}
}
