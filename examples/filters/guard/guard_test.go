package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk"
	"github.com/sluicedb/sluice/sdk/filtertest"
	"github.com/sluicedb/sluice/sdk/sqllex"
)

// testTimeout is the deadline of each call in these tests: they check
// decisions, not speed, and a busy machine (the race detector, test
// binaries in parallel) can stall a call past the host's default 2 ms,
// which the failure policy would then answer in the filter's place.
const testTimeout = time.Second

// load builds and loads the filter with the JSON configuration config.
func load(t *testing.T, config string) *filtertest.Harness {
	t.Helper()
	return filtertest.Load(t, ".", filtertest.Options{Config: []byte(config), Timeout: testTimeout})
}

const (
	denied  = "42501" // DDL
	noWhere = "21000" // UPDATE or DELETE without WHERE
	pass    = ""
)

// step is a statement and the SQLSTATE it must be refused with ("" for
// none).
type step struct {
	sql  string
	want string
}

// run decides each step in a session of user and checks the answer: a
// refusal with exactly the SQLSTATE, or nothing at all.
func run(t *testing.T, h *filtertest.Harness, user string, prepared bool, steps []step) {
	t.Helper()
	s := h.Session(t, filters.SessionAttrs{User: user, Database: "shop"})
	defer s.Close()
	for _, st := range steps {
		var d filters.Decision
		if prepared {
			d = s.Prepared(st.sql)
		} else {
			d = s.Query(st.sql)
		}
		switch {
		case st.want == pass && (d.Reject != nil || d.Route != (session.Route{}) || d.Pin != session.PinKeep || d.Rewrite != ""):
			t.Errorf("%s: %q: got %+v, want no opinion", user, st.sql, d)
		case st.want != pass && (d.Reject == nil || d.Reject.Code != st.want || d.Filter != "guard"):
			t.Errorf("%s: %q: got %+v, want refused with %s", user, st.sql, d, st.want)
		}
	}
}

const denyList = `{"ddl_users_denied": ["app", "reporting"]}`

func TestGuardDDL(t *testing.T) {
	h := load(t, denyList)
	ddl := []step{
		{"CREATE TABLE t (a int)", denied},
		{"create table t (a int)", denied},
		{"ALTER TABLE t ADD COLUMN b int", denied},
		{"DROP INDEX i", denied},
		{"drop table if exists t cascade", denied},
		{"TRUNCATE t", denied},
		{"COMMENT ON TABLE t IS 'x'", denied},
		{"GRANT SELECT ON t TO bob", denied},
		{"REVOKE ALL ON t FROM bob", denied},
		{"CREATE OR REPLACE VIEW v AS SELECT 1", denied},
		{"CREATE UNLOGGED TABLE u (a int)", denied},
		{"/* hello */ DROP TABLE t", denied},
		{"SELECT 1; DROP TABLE t", denied},                      // every statement of the text
		{"SELECT 1;\n\n  alter table t rename to u;", denied},   //
		{"EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", denied}, // runs the CREATE
		{"SELECT * INTO t2 FROM t", denied},                     // creates a table
		{"WITH a AS (SELECT 1) SELECT * INTO t2 FROM a", denied},
		// Temporary objects are no DDL: no other session sees them.
		{"CREATE TEMP TABLE x (a int)", pass},
		{"CREATE LOCAL TEMPORARY TABLE x (a int)", pass},
		{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", pass},
		{"SELECT * INTO TEMP t2 FROM t", pass},
		{"SELECT * INTO pg_temp.t2 FROM t", pass},
		// Not DDL, or DDL only in a string or a comment.
		{"SELECT * FROM t", pass},
		{"INSERT INTO t VALUES (1)", pass},
		{"INSERT INTO t SELECT * FROM u", pass},
		{"UPDATE t SET a = 1 WHERE id = 2", pass},
		{"SELECT 'DROP TABLE t'", pass},
		{"SELECT 1 -- ; DROP TABLE t", pass},
		{"SELECT 1 /* ; DROP TABLE t */", pass},
		{"SELECT $$; DROP TABLE t; $$", pass},
		{"SELECT drop_table FROM t", pass},
		{"SELECT 1; SELECT 2", pass},
		{"BEGIN", pass},
		{"COMMIT", pass},
	}
	for _, user := range []string{"app", "reporting"} {
		run(t, h, user, false, ddl)
	}
	// A user not on the list may.
	for i := range ddl {
		ddl[i].want = pass
	}
	run(t, h, "migrator", false, ddl)
	// Prepared statements are checked as well.
	run(t, h, "app", true, []step{{"DROP TABLE t", denied}, {"SELECT * INTO t2 FROM t", denied}, {"SELECT $1", pass}})
	run(t, h, "migrator", true, []step{{"DROP TABLE t", pass}})

	s := h.Session(t, filters.SessionAttrs{User: "app"})
	defer s.Close()
	if d := s.Query("drop table t"); d.Reject == nil || d.Reject.Message != `guard: DDL (DROP) is not allowed for user "app"` {
		t.Errorf("DDL refusal: %+v", d.Reject)
	}
	if d := s.Query("SELECT * INTO t2 FROM t"); d.Reject == nil ||
		d.Reject.Message != `guard: DDL (SELECT INTO, which creates a table) is not allowed for user "app"` {
		t.Errorf("SELECT INTO refusal: %+v", d.Reject)
	}
	if got, want := h.Counter("refused_ddl"), int64(2*17+2+2); got != want {
		t.Errorf("refused_ddl = %d, want %d", got, want)
	}
}

// With ddl_users_allowed, only the listed users may run DDL.
func TestGuardDDLAllowList(t *testing.T) {
	h := load(t, `{"ddl_users_allowed": ["migrator"], "require_where": false}`)
	for user, want := range map[string]string{"migrator": pass, "app": denied, "Migrator": denied, "": denied} {
		run(t, h, user, false, []step{
			{"CREATE INDEX i ON t (a)", want},
			{"SELECT 1", pass},
			{"DELETE FROM t", pass}, // require_where is off
		})
	}
	h = load(t, `{"ddl_users_allowed": []}`)
	run(t, h, "postgres", false, []step{{"DROP TABLE t", denied}, {"DELETE FROM t", noWhere}})
}

func TestGuardWhere(t *testing.T) {
	h := load(t, denyList)
	steps := []step{
		{"DELETE FROM t", noWhere},
		{"delete from t", noWhere},
		{"UPDATE t SET a = 1", noWhere},
		{"update t set a = 1;", noWhere},
		{"UPDATE ONLY t AS x SET a = 1", noWhere},
		{"UPDATE s.t * x SET a = 1", noWhere},
		{`UPDATE "my table" SET a = 1`, noWhere},
		{"DELETE FROM t WHERE id = 1", pass},
		{"delete from t where true", pass},
		{"DELETE\n\tFROM t\n\tWHERE\tid = 1", pass},
		{"DELETE FROM t\nWHERE\nid = 1", pass},
		{"DELETE FROM t WHERE CURRENT OF c", pass},
		{"DELETE FROM t USING u WHERE t.id = u.id RETURNING *", pass},
		// A WHERE in a comment, a string, an identifier or a subquery is not
		// the statement's.
		{"DELETE FROM t -- WHERE id = 1", noWhere},
		{"DELETE FROM t -- a comment\nWHERE id = 1", pass},
		{"DELETE FROM t /* WHERE id = 1 */", noWhere},
		{"DELETE FROM t /* nested /* comment */ WHERE id = 1, still in the comment */", noWhere},
		{"UPDATE t SET a = 'WHERE'", noWhere},
		{"UPDATE t SET a = 'it''s WHERE'", noWhere},
		{`UPDATE t SET a = E'\' WHERE '`, noWhere},
		{"UPDATE t SET a = $$ WHERE $$", noWhere},
		{"UPDATE t SET a = $x$ WHERE $y$ WHERE $x$", noWhere},
		{`UPDATE t SET "where" = 1`, noWhere},
		{`UPDATE t SET "a "" where" = 1`, noWhere},
		{`UPDATE t SET a = U&'d\0061t WHERE'`, noWhere},
		{`UPDATE t SET a = B'1010' WHERE id = 1`, pass},
		{`UPDATE t SET a = E'\\' WHERE id = 1`, pass}, // an escaped backslash
		{"UPDATE t SET somewhere_col = 1", noWhere},
		{"UPDATE t SET a = 1 WHERE somewhere_col = 2", pass},
		{"UPDATE t SET a = (SELECT b FROM u WHERE u.id = t.id)", noWhere},
		{"UPDATE t SET a = u.a FROM u WHERE u.id = t.id", pass},
		{"UPDATE t SET a = u.a FROM (SELECT * FROM u WHERE u.x) u", noWhere},
		// WITH, EXPLAIN, PREPARE, COPY: the UPDATE or DELETE inside counts.
		{"WITH x AS (SELECT 1) DELETE FROM t", noWhere},
		{"WITH x AS (SELECT 1 WHERE true) DELETE FROM t", noWhere},
		{"WITH x AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM x)", pass},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d WHERE true", noWhere},
		{"WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", pass},
		{"WITH u AS (UPDATE t SET a = 1 WHERE b RETURNING *), d AS (DELETE FROM t RETURNING *) SELECT 1", noWhere},
		{"EXPLAIN ANALYZE DELETE FROM t", noWhere},
		{"EXPLAIN (ANALYZE, FORMAT JSON) UPDATE t SET a = 1", noWhere},
		{"EXPLAIN DELETE FROM t WHERE id = 1", pass},
		{"PREPARE p AS DELETE FROM t", noWhere},
		{"PREPARE p (int) AS DELETE FROM t WHERE id = $1", pass},
		{"COPY (DELETE FROM t RETURNING *) TO STDOUT", noWhere},
		// Every statement of the text.
		{"SELECT 1; DELETE FROM t", noWhere},
		{"DELETE FROM t WHERE id = 1; UPDATE t SET a = 1", noWhere},
		{"DELETE FROM t WHERE id = 1; UPDATE t SET a = 1 WHERE id = 2;", pass},
		// UPDATE and DELETE that are not statements.
		{"SELECT * FROM t FOR UPDATE", pass},
		{"SELECT * FROM t FOR NO KEY UPDATE", pass},
		{"INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2", pass},
		{"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (u.id)", pass},
		{"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a", pass},
		{"CREATE TABLE c (id int REFERENCES p ON DELETE CASCADE ON UPDATE SET NULL)", pass},
		{"CREATE TABLE c (update int, delete int)", pass},
		{"CREATE TRIGGER g BEFORE UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION f()", pass},
		{"GRANT UPDATE, DELETE ON t TO bob", pass},
		{"SELECT 'DELETE FROM t'", pass},
		// The statements of a BEGIN ATOMIC body run when the function is
		// called; they are not this statement's.
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC UPDATE t SET a = 1; DELETE FROM t; END", pass},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; DELETE FROM t", noWhere},
	}
	run(t, h, "migrator", false, steps)

	// Prepared statements are checked as well.
	run(t, h, "app", true, []step{{"DELETE FROM t", noWhere}, {"UPDATE t SET a = $1", noWhere}, {"DELETE FROM t WHERE id = $1", pass}})

	s := h.Session(t, filters.SessionAttrs{User: "app"})
	defer s.Close()
	for sql, msg := range map[string]string{
		"DELETE FROM t":      "guard: DELETE requires a WHERE clause (add WHERE true to delete every row)",
		"UPDATE t SET a = 1": "guard: UPDATE requires a WHERE clause (add WHERE true to update every row)",
	} {
		if d := s.Query(sql); d.Reject == nil || d.Reject.Message != msg {
			t.Errorf("%q: refusal %+v, want %q", sql, d.Reject, msg)
		}
	}

	// Without require_where, only DDL is checked.
	h = load(t, `{"ddl_users_denied": ["app"], "require_where": false}`)
	run(t, h, "app", false, []step{{"DELETE FROM t", pass}, {"UPDATE t SET a = 1", pass}, {"DROP TABLE t", denied}})
}

// A statement longer than the host's 1 MiB limit is checked as far as the
// filter sees it: a WHERE past the cut is not known, so it is not refused.
func TestGuardTruncated(t *testing.T) {
	h := load(t, denyList)
	long := "UPDATE t SET a = '" + strings.Repeat("x", 1<<20) + "' WHERE id = 1"
	run(t, h, "app", false, []step{
		{long, pass},
		{"DELETE FROM t; " + long, noWhere},
		{"DROP TABLE t; " + long, denied},
	})
	if got := h.Counter("truncated"); got != 3 {
		t.Errorf("truncated = %d, want 3", got)
	}
}

func TestGuardRejectsBadConfig(t *testing.T) {
	p := filtertest.Build(t, ".")
	for _, tc := range []struct{ config, err string }{
		{`{"ddl_users_denied": ["a"], "ddl_users_allowed": ["b"]}`, "ddl_users_allowed and ddl_users_denied: give one list, not both"},
		{`{"ddl_users_denied": []}`, "ddl_users_denied: empty"},
		{`{"ddl_users_denied": ["app", ""]}`, "ddl_users_denied: a user name is empty"},
		{`{"ddl_users_allowed": [""]}`, "ddl_users_allowed: a user name is empty"},
		{`{"require_where": false}`, "nothing to check"},
		{`{"require_were": true}`, `unknown field "require_were"`},
		{`{"ddl_users_denied": "app"}`, "cannot unmarshal string"},
		{`not json`, "invalid character"},
	} {
		h, err := filtertest.LoadModule(p, filtertest.Options{Name: "guard", Config: []byte(tc.config)})
		if err == nil {
			h.Filter.Close()
			t.Errorf("config %s: loaded, want an error containing %q", tc.config, tc.err)
			continue
		}
		if !errors.Is(err, filters.ErrConfigRejected) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("config %s: error %q, want the filter's refusal containing %q", tc.config, err, tc.err)
		}
	}
}

// The example in README.md is a valid Sluice filter block whose config the
// filter accepts and acts on.
func TestGuardREADMEConfig(t *testing.T) {
	cfg := filtertest.READMEConfig(t, "README.md", filtertest.Build(t, "."))
	h, err := filtertest.LoadModule(cfg.Module, filtertest.Options{Name: cfg.Name, Config: cfg.Config, Timeout: testTimeout})
	if err != nil {
		t.Fatalf("README config %s: %v", cfg.Config, err)
	}
	defer h.Filter.Close()
	run(t, h, "app", false, []step{{"DROP TABLE t", denied}, {"DELETE FROM t", noWhere}})
	run(t, h, "migrator", false, []step{{"DROP TABLE t", pass}})
}

// The filter survives generated statements (some of 100-300 KB): the
// deadline is generous because this checks for traps and runaway calls,
// not speed, on a busy machine.
func TestGuardSurvives(t *testing.T) {
	h := filtertest.Load(t, ".", filtertest.Options{Config: []byte(denyList), Timeout: 200 * time.Millisecond})
	h.Survive(t, 2000, 3)
}

// FuzzChecker checks that the checker ends on any text (sdk/sqllex fuzzes
// the tokens themselves).
func FuzzChecker(f *testing.F) {
	for _, s := range []string{
		"SELECT 1", "E'\\", "$a$ x $a", "$$", "/* /* */", "--", "U&\"x", "1e+", "'it''s'", "$1$2", "\xff\xfe",
		"WITH x AS (DELETE FROM t) SELECT 1", "UPDATE t SET a = (SELECT 1 WHERE true)",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		c := checker{l: sqllex.Lexer{Src: src}}
		c.run() // must end
	})
}

// The statement hook does not allocate unless it refuses (natively, where
// the host functions do nothing: the filter's own code is what is
// measured).
func TestGuardDoesNotAllocate(t *testing.T) {
	checkDDL, ddlAllowList, ddlUsers, requireWhere = true, true, map[string]bool{"": true}, true
	for _, st := range []sdk.Statement{
		{SQL: "SELECT * FROM t", Command: "SELECT", Count: 1, ReadOnly: true},
		{SQL: "UPDATE t SET a = 'x' WHERE id = (SELECT 1)", Command: "UPDATE", Count: 1},
		{SQL: "WITH d AS (DELETE FROM t WHERE true RETURNING *) SELECT * FROM d", Command: "WITH", Count: 1},
		{SQL: "SELECT 1; DROP TABLE t; /* comment */ DELETE FROM t WHERE $$x$$ = E'\\''", Command: "SELECT", Count: 3},
	} {
		if d := (guard{}).Statement(sdk.Session{}, &st); d != sdk.Default() {
			t.Errorf("%.40q: native decision %+v, want Default", st.SQL, d)
		}
		if n := testing.AllocsPerRun(100, func() { guard{}.Statement(sdk.Session{}, &st) }); n != 0 {
			t.Errorf("%.40q: %v allocations", st.SQL, n)
		}
	}
}
