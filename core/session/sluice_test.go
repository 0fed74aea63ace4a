package session

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/core/pool"
)

func TestLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want LSN
		ok   bool
	}{
		{"0/0", 0, true},
		{"16/B374D848", 0x16_B374D848, true},
		{"ff/abcd", 0xff_0000abcd, true},
		{"FFFFFFFF/FFFFFFFF", 1<<64 - 1, true},
		{"123456789/1", 0, false},
		{"1/123456789", 0, false},
		{" 0/1", 0, false},
		{"0/1 ", 0, false},
		{"0/", 0, false},
		{"/1", 0, false},
		{"0x1/1", 0, false},
		{"abc", 0, false},
		{"", 0, false},
	} {
		got, ok := ParseLSN(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if s := LSN(0xff_0000abcd).String(); s != "FF/ABCD" {
		t.Errorf("String = %q, want FF/ABCD (as PostgreSQL prints it)", s)
	}
	if s := LSN(0).String(); s != "0/0" {
		t.Errorf("String = %q, want 0/0", s)
	}
}

// The statements Sluice answers itself, and PostgreSQL's errors for the
// malformed ones (as PostgreSQL 15 answers the same text for a custom
// parameter).
func TestParseSluice(t *testing.T) {
	for _, tc := range []struct {
		sql   string
		ours  bool
		verb  sluiceVerb
		name  string
		value string
		code  string // of st.err
		text  string // in st.err's message
	}{
		{sql: "SET sluice.min_lsn = '0/16B3748'", ours: true, verb: verbSet, name: paramMinLSN, value: "0/16B3748"},
		{sql: "set session SLUICE.MIN_LSN to '1/2';", ours: true, verb: verbSet, name: paramMinLSN, value: "1/2"},
		{sql: `SET "sluice"."min_lsn" = E'0/1'`, ours: true, verb: verbSet, name: paramMinLSN, value: "0/1"},
		{sql: "/* app */ SET sluice.min_lsn = 'x' -- why\n", ours: true, verb: verbSet, name: paramMinLSN, value: "x"},
		{sql: "SET sluice.min_lsn TO DEFAULT", ours: true, verb: verbSet, name: paramMinLSN},
		{sql: "SET sluice.min_lsn = abc", ours: true, verb: verbSet, name: paramMinLSN, value: "abc"},
		{sql: "SET sluice.min_lsn = 5", ours: true, verb: verbSet, name: paramMinLSN, value: "5"},
		{sql: "SET LOCAL sluice.min_lsn = '0/1'", ours: true, verb: verbSet, name: paramMinLSN, value: "0/1"},
		{sql: "RESET sluice.min_lsn", ours: true, verb: verbReset, name: paramMinLSN},
		{sql: "SHOW sluice.last_lsn", ours: true, verb: verbShow, name: paramLastLSN},
		{sql: "show Sluice.Min_Lsn ;", ours: true, verb: verbShow, name: paramMinLSN},
		{sql: "SET sluice.min_lsn = 0/1", ours: true, code: "42601", text: `syntax error at or near "/"`},
		{sql: "SET sluice.min_lsn =", ours: true, code: "42601", text: "syntax error at end of input"},
		{sql: "SET sluice.min_lsn = 'a' 'b'", ours: true, code: "42601", text: `syntax error at or near "'b'"`},
		{sql: "SET sluice.min_lsn = a, 'b'", ours: true, code: "22023", text: "SET sluice.min_lsn takes only one argument"},
		{sql: "SET sluice.min_lsn = '0/1'; SELECT 1", ours: true, code: "0A000", text: "must be sent in a query of its own"},
		{sql: "SHOW sluice.last_lsn x", ours: true, code: "42601"},
		{sql: "SET sluice.other = 'x'"},
		{sql: `SET "Sluice".min_lsn = 'x'`},
		{sql: "SET search_path = sluice"},
		{sql: "SELECT 'SET sluice.min_lsn = 1'"},
		{sql: "SHOW sluice"},
		{sql: "SET sluice_min_lsn = 1"},
		{sql: ""},
	} {
		st, ours := parseSluice(tc.sql)
		if ours != tc.ours {
			t.Errorf("%q: ours = %v, want %v", tc.sql, ours, tc.ours)
			continue
		}
		if !ours {
			continue
		}
		if tc.code != "" {
			if st.err == nil || st.err.Code != tc.code || !strings.Contains(st.err.Message, tc.text) {
				t.Errorf("%q: err %v, want %s %q", tc.sql, st.err, tc.code, tc.text)
			}
			continue
		}
		if st.err != nil || st.verb != tc.verb || st.name != tc.name || st.value != tc.value {
			t.Errorf("%q: %+v, want verb %d name %q value %q", tc.sql, st, tc.verb, tc.name, tc.value)
		}
		if !maybeSluice(append([]byte(tc.sql), 0)) {
			t.Errorf("%q: maybeSluice is false for a statement of Sluice's", tc.sql)
		}
	}
	for _, sql := range []string{"SELECT abalance FROM pgbench_accounts WHERE aid = 1", "SETTLE sluice", "INSERT INTO sluice VALUES (1)", "SET search_path = a"} {
		if maybeSluice(append([]byte(sql), 0)) {
			t.Errorf("maybeSluice(%q) = true", sql)
		}
	}
}

// newRYWHarness is newHarness with read-your-writes on.
func newRYWHarness(t *testing.T, policy Policy) *harness {
	cfg := &Config{Mode: ModeTransaction, Track: map[string]bool{"search_path": true}, MaxPrepared: 10, MaxClientPrepared: 3,
		RecordLSN: true, Policy: policy}
	h := &harness{t: t, m: New(cfg, Key{ProcessID: 7, SecretKey: 9})}
	h.m.Login(nil, defaults(), noCache{})
	return h
}

// borrowRoute offers a client message that needs a connection and returns
// the route it asks for (the harness then attaches one).
func (h *harness) borrowRoute(m []byte) Route {
	h.t.Helper()
	st := h.m.Client(m[0], len(m)-5, m[5:])
	if st.Need != NeedServer {
		h.t.Fatalf("%q: need %d, want a borrow", m, st.Need)
	}
	h.client(m)
	return st.Route
}

// errorText returns the SQLSTATE and message of the first ErrorResponse
// in b.
func errorText(b []byte) string {
	for len(b) >= 5 {
		n := int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4])
		if b[0] == 'E' {
			e := pool.DecodeError(b[5 : 1+n])
			return e.Code + " " + e.Message
		}
		b = b[1+n:]
	}
	return ""
}

func TestTranscriptSetAndShowMinLSN(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("SET sluice.min_lsn = '1/2A'"))
	if h.m.Holding() {
		t.Fatal("SET sluice.min_lsn borrowed a connection")
	}
	check(t, "SET", h.toCli(), "C ZI")
	h.client(query("SHOW sluice.min_lsn"))
	out := h.toClient
	check(t, "SHOW", h.toCli(), "T D C ZI")
	if !bytes.Contains(out, []byte("sluice.min_lsn\x00")) || !bytes.Contains(out, []byte("1/2A")) {
		t.Errorf("SHOW answered %q", out)
	}
	// The next borrow carries it; read-your-writes off records nothing.
	if r := h.borrowRoute(query("SELECT 1")); r.MinLSN != 0x1_0000002A {
		t.Errorf("route after SET: %+v", r)
	}
	h.server(cc("SELECT 1"), rfq('I'))
	check(t, "to server", h.sent(), "Q(SELECT 1)")
	h.toCli()
	h.client(query("SHOW sluice.last_lsn"))
	if out := h.toClient; !bytes.Contains(out, []byte("sluice.last_lsn\x00")) || !bytes.Contains(out, []byte("0/0")) {
		t.Errorf("SHOW sluice.last_lsn answered %q, want 0/0", out)
	}
	h.toCli()
	h.client(query("RESET sluice.min_lsn"))
	check(t, "RESET", h.toCli(), "C ZI")
	if r := h.borrowRoute(query("SELECT 1")); r.MinLSN != 0 {
		t.Errorf("route after RESET: %+v", r)
	}
	check(t, "to server", h.sent(), "Q(SELECT 1)")
}

func TestTranscriptSluiceErrors(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	for _, tc := range []struct{ sql, want string }{
		{"SET sluice.min_lsn = 'abc'", `22P02 invalid input syntax for type pg_lsn: "abc"`},
		{"SET sluice.min_lsn = '0/1 '", `22P02 invalid input syntax for type pg_lsn: "0/1 "`},
		{"SET sluice.last_lsn = '0/1'", `55P02 parameter "sluice.last_lsn" cannot be changed`},
		{"RESET sluice.last_lsn", `55P02 parameter "sluice.last_lsn" cannot be changed`},
		{"SHOW sluice.min_lsn; SELECT 1", "0A000 SHOW sluice.min_lsn must be sent in a query of its own"},
	} {
		h.client(query(tc.sql))
		out := h.toClient
		check(t, tc.sql, h.toCli(), "E ZI")
		if got := errorText(out); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.sql, got, tc.want)
		}
	}
	check(t, "to server", h.sent(), "")
	if h.m.MinLSN() != 0 || h.m.Holding() {
		t.Fatalf("after errors: min %v, holding %v", h.m.MinLSN(), h.m.Holding())
	}
	// Prepared: refused with a clear error, the batch skipped to Sync.
	h.client(parse("", "SHOW sluice.last_lsn"))
	h.client(bind("", ""))
	h.client(syncMsg())
	out := h.toClient
	check(t, "Parse of SHOW sluice.last_lsn", h.toCli(), "E ZI")
	if got := errorText(out); !strings.HasPrefix(got, "0A000 ") {
		t.Errorf("Parse: %s", got)
	}
	check(t, "to server", h.sent(), "")
}

// Inside a transaction SET sluice.min_lsn is answered in the
// transaction's status and lasts only if it commits, as PostgreSQL's SET;
// in a failed transaction the server itself refuses it (25P02).
func TestTranscriptMinLSNInTransaction(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.sent()
	h.toCli()
	h.client(query("SET sluice.min_lsn = '0/10'"))
	check(t, "SET in a transaction", h.toCli(), "C ZT")
	check(t, "to server", h.sent(), "")
	h.client(query("ROLLBACK"))
	h.server(cc("ROLLBACK"), rfq('I'))
	if h.m.MinLSN() != 0 {
		t.Errorf("after ROLLBACK: min_lsn %v, want 0/0", h.m.MinLSN())
	}
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	h.client(query("SET sluice.min_lsn = '0/20'"))
	h.client(query("COMMIT"))
	h.server(cc("COMMIT"), rfq('I'))
	if h.m.MinLSN() != 0x20 {
		t.Errorf("after COMMIT: min_lsn %v, want 0/20", h.m.MinLSN())
	}
	h.sent()
	h.toCli()

	// A statement still owed: the SHOW waits its turn.
	h.client(query("BEGIN"))
	if st := h.m.Client('Q', len("SHOW sluice.min_lsn")+1, []byte("SHOW sluice.min_lsn\x00")); st.Need != NeedReplies {
		t.Fatalf("SHOW with a reply owed: need %d, want NeedReplies", st.Need)
	}
	h.server(cc("BEGIN"), rfq('T'))
	h.client(query("SELECT 1/0"))
	h.server(errResp("22012", "division by zero"), rfq('E'))
	h.sent()
	h.toCli()
	h.client(query("SET sluice.min_lsn = '0/30'"))
	if sent := h.sent(); !strings.HasPrefix(sent, "Q(DO $sluice$") || !strings.Contains(sent, "25P02") {
		t.Errorf("SET in a failed transaction sent %s", sent)
	}
	h.server(errResp("25P02", "current transaction is aborted, commands ignored until end of transaction block"), rfq('E'))
	check(t, "to client", h.toCli(), "E ZE")
	if h.m.MinLSN() != 0x20 {
		t.Errorf("SET in a failed transaction changed min_lsn to %v", h.m.MinLSN())
	}
}

// After a commit that wrote, the machine reads the writer's position on
// the same connection, after the client has its ReadyForQuery and before
// the connection goes back; the client's next borrow carries it.
func TestTranscriptRecordsLSNAfterWrite(t *testing.T) {
	h := newRYWHarness(t, nil)
	h.client(query("INSERT INTO t VALUES (1)"))
	st := h.server(cc("INSERT 0 1"), rfq('I'))
	check(t, "to client", h.toCli(), "C ZI")
	check(t, "to server", h.sent(), "Q(INSERT INTO t VALUES (1)) Q("+lsnQuery+")")
	if st.Release != Keep || h.returned != 0 {
		t.Fatal("released before the position was read")
	}
	h.expect(ExpectReplies)
	h.server(msg('T', int16(1)), msg('D', int16(1), int32(9), []byte("0/3000060")), cc("SELECT 1"), rfq('I'))
	check(t, "to client", h.toCli(), "") // Sluice's own exchange
	if h.returned != 1 || h.m.LastLSN() != 0x3000060 {
		t.Fatalf("after the read: returned %d, last %v", h.returned, h.m.LastLSN())
	}
	if r := h.borrowRoute(query("SELECT * FROM t")); r.MinLSN != 0x3000060 {
		t.Errorf("next route %+v, want MinLSN 0/3000060", r)
	}
	h.server(cc("SELECT 1"), rfq('I'))
	check(t, "a read records nothing", h.sent(), "Q(SELECT * FROM t)")
	if h.returned != 2 {
		t.Fatal("a read did not release at once")
	}
	h.client(query("SHOW sluice.last_lsn"))
	if out := h.toClient; !bytes.Contains(out, []byte("0/3000060")) {
		t.Errorf("SHOW sluice.last_lsn answered %q", out)
	}
}

// The client's next message may arrive while the position is read: it
// waits for the read, and the connection's return, and is then routed
// afresh (a policy may send it elsewhere), carrying the new position.
func TestTranscriptMessageDuringLSNRead(t *testing.T) {
	h := newRYWHarness(t, nil)
	h.client(query("INSERT INTO t VALUES (1)"))
	h.server(cc("INSERT 0 1"), rfq('I'))
	if st := h.client(query("SELECT * FROM t")); st.Need != NeedReplies {
		t.Fatalf("the next statement during the read: %+v, want NeedReplies", st)
	}
	check(t, "to server", h.sent(), "Q(INSERT INTO t VALUES (1)) Q("+lsnQuery+")")
	h.server(msg('D', int16(1), int32(3), []byte("0/9")), cc("SELECT 1"), rfq('I'))
	if h.returned != 1 || h.m.LastLSN() != 9 {
		t.Fatalf("returned %d after the read, last %v", h.returned, h.m.LastLSN())
	}
	sel := query("SELECT * FROM t")
	st := h.m.Client(sel[0], len(sel)-5, sel[5:])
	if st.Need != NeedServer || st.Route.MinLSN != 9 {
		t.Fatalf("the statement after the read: %+v, want a borrow at 0/9", st)
	}
	h.toCli()
	h.client(query("SELECT * FROM t"))
	check(t, "to server", h.sent(), "Q(SELECT * FROM t)")
	h.server(cc("SELECT 1"), rfq('I'))
	check(t, "to client", h.toCli(), "C ZI")
	if h.returned != 2 {
		t.Fatal("not returned after the read")
	}
}

// Only a commit of a write is recorded: not a read, a rollback, a failed
// statement or transaction, nor a write on a replica.
func TestTranscriptRecordsOnlyCommittedWrites(t *testing.T) {
	type exchange struct {
		client  [][]byte
		replies [][]byte
	}
	q := func(sql string, replies ...[]byte) exchange {
		return exchange{[][]byte{query(sql)}, replies}
	}
	for _, tc := range []struct {
		name   string
		steps  []exchange
		record bool
	}{
		{"read", []exchange{q("SELECT 1", cc("SELECT 1"), rfq('I'))}, false},
		{"autocommit write", []exchange{q("UPDATE t SET a = 1", cc("UPDATE 1"), rfq('I'))}, true},
		{"unknown function", []exchange{q("SELECT f()", cc("SELECT 1"), rfq('I'))}, true},
		{"failed write", []exchange{q("INSERT INTO t VALUES (1)", errResp("23505", "duplicate"), rfq('I'))}, false},
		{"committed transaction", []exchange{
			q("BEGIN", cc("BEGIN"), rfq('T')), q("INSERT INTO t VALUES (1)", cc("INSERT 0 1"), rfq('T')), q("COMMIT", cc("COMMIT"), rfq('I'))}, true},
		{"rolled back", []exchange{
			q("BEGIN", cc("BEGIN"), rfq('T')), q("INSERT INTO t VALUES (1)", cc("INSERT 0 1"), rfq('T')), q("ROLLBACK", cc("ROLLBACK"), rfq('I'))}, false},
		{"commit of a failed transaction", []exchange{
			q("BEGIN", cc("BEGIN"), rfq('T')), q("INSERT INTO t VALUES (1)", errResp("23505", "duplicate"), rfq('E')), q("COMMIT", cc("ROLLBACK"), rfq('I'))}, false},
		{"failed commit", []exchange{
			q("BEGIN", cc("BEGIN"), rfq('T')), q("INSERT INTO t VALUES (1)", cc("INSERT 0 1"), rfq('T')), q("COMMIT", errResp("23503", "deferred"), rfq('I'))}, false},
		{"transaction in one query", []exchange{q("BEGIN; INSERT INTO t VALUES (1); COMMIT", cc("BEGIN"), cc("INSERT 0 1"), cc("COMMIT"), rfq('I'))}, true},
		{"rolled back in one query", []exchange{q("BEGIN; INSERT INTO t VALUES (1); ROLLBACK", cc("BEGIN"), cc("INSERT 0 1"), cc("ROLLBACK"), rfq('I'))}, false},
		{"read-only transaction", []exchange{
			q("BEGIN", cc("BEGIN"), rfq('T')), q("SELECT 1", cc("SELECT 1"), rfq('T')), q("COMMIT", cc("COMMIT"), rfq('I'))}, false},
		{"extended write", []exchange{{
			[][]byte{parse("", "INSERT INTO t VALUES ($1)"), bind("", "", "1"), execute(), syncMsg()},
			[][]byte{msg('1'), msg('2'), cc("INSERT 0 1"), rfq('I')}}}, true},
		{"extended read", []exchange{{
			[][]byte{parse("", "SELECT $1::int"), bind("", "", "1"), execute(), syncMsg()},
			[][]byte{msg('1'), msg('2'), cc("SELECT 1"), rfq('I')}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRYWHarness(t, nil)
			for _, ex := range tc.steps {
				for _, c := range ex.client {
					h.client(c)
				}
				h.server(ex.replies...)
			}
			recorded := strings.Contains(h.sent(), lsnQuery)
			if recorded != tc.record {
				t.Fatalf("recorded %v, want %v", recorded, tc.record)
			}
			if !tc.record && h.returned != 1 {
				t.Fatalf("returned %d", h.returned)
			}
		})
	}

	// A write a replica ran (a reader listener's unknown function) tells
	// nothing of the writer's position.
	h := newRYWHarness(t, nil)
	h.srv = newServer()
	h.srv.Params["in_hot_standby"], h.srv.Reported["in_hot_standby"] = "on", "on"
	h.client(query("SELECT f()"))
	h.server(cc("SELECT 1"), rfq('I'))
	check(t, "on a replica", h.sent(), "Q(SELECT f())")
	if h.returned != 1 {
		t.Fatal("not returned")
	}
}

// With read-your-writes off a write costs nothing more.
func TestTranscriptNoRecordWhenOff(t *testing.T) {
	h := newHarness(t, ModeTransaction)
	h.client(query("INSERT INTO t VALUES (1)"))
	h.server(cc("INSERT 0 1"), rfq('I'))
	check(t, "to server", h.sent(), "Q(INSERT INTO t VALUES (1))")
	if h.returned != 1 {
		t.Fatal("not returned at once")
	}
}

// A failed read of the position records nothing and releases the
// connection as usual.
func TestTranscriptLSNReadFails(t *testing.T) {
	h := newRYWHarness(t, nil)
	h.client(query("INSERT INTO t VALUES (1)"))
	h.server(cc("INSERT 0 1"), rfq('I'))
	h.server(errResp("55000", "recovery is in progress"), rfq('I'))
	if h.returned != 1 || h.m.LastLSN() != 0 {
		t.Fatalf("returned %d, last %v", h.returned, h.m.LastLSN())
	}
	check(t, "to client", h.toCli(), "C ZI")
}

// The split policy routes what certainly reads to the replicas.
func TestSplitPolicyRoutes(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want Role
	}{
		{"SELECT * FROM t", RoleReplica},
		{"SELECT count(*), now() FROM t WHERE a IN (1, 2)", RoleReplica},
		{"SELECT 1; SELECT 2", RoleReplica},
		{"SHOW search_path", RoleReplica},
		{"BEGIN READ ONLY", RoleReplica},
		{"START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", RoleReplica},
		{"BEGIN READ ONLY; SELECT f(); COMMIT", RoleReplica},
		{"BEGIN READ ONLY; SELECT 1; COMMIT; INSERT INTO t VALUES (1)", RoleWriter},
		{"BEGIN", RoleWriter},
		{"BEGIN; SELECT 1; COMMIT", RoleWriter},
		{"INSERT INTO t VALUES (1)", RoleWriter},
		{"SELECT * FROM t FOR UPDATE", RoleWriter},
		{"SELECT nextval('s')", RoleWriter},
		{"SELECT my_function()", RoleWriter},
		{"SELECT 1; DELETE FROM t", RoleWriter},
		{"SET search_path = a", RoleWriter},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", RoleWriter},
	} {
		h := newRYWHarness(t, SplitPolicy{})
		if r := h.borrowRoute(query(tc.sql)); r.Role != tc.want {
			t.Errorf("%q: route %v, want %v", tc.sql, r.Role, tc.want)
		}
	}
	// Extended protocol: the Parse borrows for what it prepares, the Bind
	// of a later transaction for what it executes.
	h := newRYWHarness(t, SplitPolicy{})
	if r := h.borrowRoute(parse("w", "INSERT INTO t VALUES ($1)")); r.Role != RoleWriter {
		t.Errorf("Parse of an INSERT: %v", r.Role)
	}
	h.client(parse("r", "SELECT * FROM t WHERE a = $1"))
	h.client(syncMsg())
	h.server(msg('1'), msg('1'), rfq('I'))
	if r := h.borrowRoute(bind("", "r", "1")); r.Role != RoleReplica {
		t.Errorf("Bind of a SELECT: %v", r.Role)
	}
	h.client(execute())
	h.client(syncMsg())
	h.server(msg('1'), msg('2'), cc("SELECT 0"), rfq('I'))
	if r := h.borrowRoute(bind("", "w", "1")); r.Role != RoleWriter {
		t.Errorf("Bind of an INSERT: %v", r.Role)
	}
	// Inside a transaction the server is fixed: nothing is asked.
	h = newRYWHarness(t, SplitPolicy{})
	h.client(query("BEGIN"))
	h.server(cc("BEGIN"), rfq('T'))
	if st := h.m.Client('Q', len("SELECT 1")+1, []byte("SELECT 1\x00")); st.Need != NeedNothing {
		t.Errorf("inside a transaction: need %d", st.Need)
	}
}
