package proxy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/proxy"
)

// The reasons Sluice gives for pinning a session, in SessionInfo.Pinned and
// as the keys of PinCounts.
const (
	reasonSetRole      = "SET ROLE"
	reasonSessionAuth  = "SET SESSION AUTHORIZATION"
	reasonSetConfig    = "set_config(..., false)"
	reasonFromCurrent  = "SET ... FROM CURRENT"
	reasonSQLPrepare   = "SQL PREPARE"
	reasonListen       = "LISTEN"
	reasonTemp         = "temporary table, view or sequence"
	reasonWithHold     = "DECLARE ... WITH HOLD"
	reasonAdvisoryLock = "session-level advisory lock"
	reasonLoad         = "LOAD"
	reasonUnknown      = "statement the classifier cannot understand"
	reasonUntrackedSet = "SET of an untracked parameter"
)

// oneConnPool is a pool of a single server connection whose borrowers give
// up after a second: while one client keeps the connection, every other
// client's statement fails with 53300.
const oneConnPool = "max_connections = 1\n  borrow_timeout = \"1s\""

// findSession returns Sluice's view of the session to which it gave the
// process ID pid.
func findSession(e *testEnv, pid uint32) (proxy.SessionInfo, bool) {
	for _, s := range e.proxy.Sessions() {
		if s.ProcessID == pid {
			return s, true
		}
	}
	return proxy.SessionInfo{}, false
}

// sessionOf returns Sluice's view of client c's session.
func sessionOf(t testing.TB, e *testEnv, c *pgx.Conn) proxy.SessionInfo {
	t.Helper()
	s, ok := findSession(e, c.PgConn().PID())
	if !ok {
		t.Fatalf("Sluice lists no session with process ID %d", c.PgConn().PID())
	}
	return s
}

// pinnedReasons returns why Sluice keeps client c on its server
// connection, sorted; none when it does not.
func pinnedReasons(t testing.TB, e *testEnv, c *pgx.Conn) []string {
	t.Helper()
	return sessionOf(t, e, c).Pinned
}

// awaitPinned waits until client c's session is pinned for exactly the
// reasons want, or not at all when want is empty, and fails the test when
// that does not happen within two seconds.
func awaitPinned(t testing.TB, e *testEnv, c *pgx.Conn, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := pinnedReasons(t, e, c)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session pinned for %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// execSQL runs sql on c, with the simple query protocol or, when protocol
// is "extended", as one unnamed extended-protocol statement (Parse, Bind,
// Execute, Sync), and returns the error PostgreSQL reported.
func execSQL(ctx context.Context, c *pgx.Conn, protocol, sql string) error {
	if protocol == "extended" {
		_, err := c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Close()
		return err
	}
	_, err := c.PgConn().Exec(ctx, sql).ReadAll()
	return err
}

// execAll runs each statement on c with the simple query protocol and
// fails the test at the first error.
func execAll(t testing.TB, c *pgx.Conn, statements ...string) {
	t.Helper()
	for _, sql := range statements {
		if err := execSQL(context.Background(), c, "simple", sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// dial connects to url with pgx in query mode mode.
func dial(ctx context.Context, url string, mode pgx.QueryExecMode) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = mode
	return pgx.ConnectConfig(ctx, cfg)
}

// directURL is a connection string to PostgreSQL itself, not through
// Sluice, as the role Sluice uses on the server.
func (e *testEnv) directURL() string {
	return e.pg.ConnString(appUser, backendPass, "appdb")
}

// connectMode opens a connection through Sluice in pgx query mode mode;
// it is closed when the test ends.
func (e *testEnv) connectMode(t testing.TB, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	return dialForTest(t, e.url(), mode, "connect through sluice")
}

// direct opens a connection to PostgreSQL itself in pgx query mode mode;
// it is closed when the test ends.
func (e *testEnv) direct(t testing.TB, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	return dialForTest(t, e.directURL(), mode, "connect to PostgreSQL")
}

func dialForTest(t testing.TB, url string, mode pgx.QueryExecMode, what string) *pgx.Conn {
	t.Helper()
	c, err := dial(context.Background(), url, mode)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// isTrue runs a query returning one boolean on c.
func isTrue(ctx context.Context, c *pgx.Conn, query string) (bool, error) {
	var ok bool
	err := c.QueryRow(ctx, query).Scan(&ok)
	return ok, err
}

// pinCase is a statement that pins the session that runs it.
type pinCase struct {
	name, sql, reason string
	// check is a query that returns true while the state the statement
	// left on the server connection is still there.
	check string
	// simpleOnly: the text holds several statements, which an
	// extended-protocol Parse refuses.
	simpleOnly bool
}

var pinCases = []pinCase{
	{name: "SET ROLE", sql: "SET ROLE app", reason: reasonSetRole,
		check: "SELECT current_setting('role') = 'app'"},
	{name: "SET SESSION AUTHORIZATION", sql: "SET SESSION AUTHORIZATION app", reason: reasonSessionAuth},
	{name: "set_config not local", sql: "SELECT set_config('work_mem', '8MB', false)", reason: reasonSetConfig,
		check: "SELECT current_setting('work_mem') = '8MB'"},
	{name: "SET FROM CURRENT", sql: "SET work_mem FROM CURRENT", reason: reasonFromCurrent},
	{name: "SQL PREPARE", sql: "PREPARE p1 AS SELECT 1", reason: reasonSQLPrepare,
		check: "SELECT EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = 'p1')"},
	{name: "LISTEN", sql: "LISTEN chan1", reason: reasonListen,
		check: "SELECT 'chan1' IN (SELECT pg_catalog.pg_listening_channels())"},
	{name: "CREATE TEMP TABLE", sql: "CREATE TEMP TABLE tt (x int)", reason: reasonTemp,
		check: "SELECT to_regclass('pg_temp.tt') IS NOT NULL"},
	{name: "CREATE TEMPORARY VIEW", sql: "CREATE TEMPORARY VIEW tv AS SELECT 1", reason: reasonTemp,
		check: "SELECT to_regclass('pg_temp.tv') IS NOT NULL"},
	{name: "CREATE TEMP SEQUENCE", sql: "CREATE TEMP SEQUENCE ts", reason: reasonTemp,
		check: "SELECT nextval('ts') = 1"},
	{name: "SELECT INTO TEMP", sql: "SELECT 1 AS x INTO TEMP tsel", reason: reasonTemp,
		check: "SELECT to_regclass('pg_temp.tsel') IS NOT NULL"},
	{name: "CREATE TABLE in pg_temp", sql: "CREATE TABLE pg_temp.tpg (x int)", reason: reasonTemp,
		check: "SELECT to_regclass('pg_temp.tpg') IS NOT NULL"},
	{name: "DECLARE WITH HOLD in a transaction", sql: "BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT", reason: reasonWithHold,
		check: "SELECT EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE name = 'cur')", simpleOnly: true},
	{name: "DECLARE WITH HOLD alone", sql: "DECLARE cur CURSOR WITH HOLD FOR SELECT 1", reason: reasonWithHold,
		check: "SELECT EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE name = 'cur')"},
	{name: "pg_advisory_lock", sql: "SELECT pg_advisory_lock(42)", reason: reasonAdvisoryLock,
		check: "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"},
	{name: "pg_try_advisory_lock", sql: "SELECT pg_try_advisory_lock(43)", reason: reasonAdvisoryLock,
		check: "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"},
	{name: "pg_advisory_lock_shared", sql: "SELECT pg_advisory_lock_shared(44)", reason: reasonAdvisoryLock,
		check: "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"},
	// Non-superusers may only LOAD from $libdir/plugins, so this fails
	// with 42501 as it does without Sluice; the session is pinned all the
	// same, since Sluice decides before the server runs the statement.
	{name: "LOAD", sql: "LOAD 'auto_explain'", reason: reasonLoad},
	{name: "SET SESSION CHARACTERISTICS", sql: "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", reason: reasonUnknown,
		check: "SELECT current_setting('default_transaction_isolation') = 'serializable'"},
	{name: "SET of a custom parameter", sql: "SET my.setting = 'x'", reason: reasonUntrackedSet,
		check: "SELECT current_setting('my.setting', true) = 'x'"},
	{name: "SET of an untracked parameter", sql: "SET enable_seqscan = off", reason: reasonUntrackedSet,
		check: "SELECT current_setting('enable_seqscan') = 'off'"},
}

// TestPinReasons runs each statement that leaves state on its server
// connection in a fresh client, with the simple and the extended query
// protocol, and checks that the client is pinned for that reason, counted
// once, keeps its server connection while idle, and keeps its state while
// another client resets the other server connection.
func TestPinReasons(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	ctx := context.Background()
	other := e.connect(t)
	for _, tc := range pinCases {
		for _, protocol := range []string{"simple", "extended"} {
			if tc.simpleOnly && protocol == "extended" {
				continue
			}
			t.Run(tc.name+"/"+protocol, func(t *testing.T) {
				// What PostgreSQL itself answers. DISCARD ALL releases the
				// advisory lock now, not when the backend gets round to exiting.
				d := e.direct(t, pgx.QueryExecModeExec)
				wantCode := sqlstate(execSQL(ctx, d, protocol, tc.sql))
				execAll(t, d, "DISCARD ALL")
				d.Close(ctx)

				before := e.proxy.PinCounts()[tc.reason]
				c := e.connect(t)
				if err := execSQL(ctx, c, protocol, tc.sql); sqlstate(err) != wantCode {
					t.Fatalf("%s: %v (SQLSTATE %q); PostgreSQL answers SQLSTATE %q", tc.sql, err, sqlstate(err), wantCode)
				}
				awaitPinned(t, e, c, tc.reason)
				if got := e.proxy.PinCounts()[tc.reason]; got != before+1 {
					t.Errorf("PinCounts()[%q] went from %d to %d, want one more", tc.reason, before, got)
				}
				if !sessionOf(t, e, c).Holds {
					t.Errorf("the pinned session holds no server connection while idle")
				}

				// Another client resets the server connection it gets; that
				// must not be the pinned client's.
				if _, err := other.Exec(ctx, "DISCARD ALL"); err != nil {
					t.Fatal(err)
				}
				if tc.check != "" {
					ok, err := isTrue(ctx, c, tc.check)
					if err != nil || !ok {
						t.Errorf("after %s the session lost its state (%s: %t, %v)", tc.sql, tc.check, ok, err)
					}
				}
				if got := pinnedReasons(t, e, c); !slices.Equal(got, []string{tc.reason}) {
					t.Errorf("after more statements the session is pinned for %q, want %q", got, tc.reason)
				}
			})
		}
	}
}

func TestPinnedClientKeepsItsServerConnection(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	a := e.connect(t)
	b := e.connect(t)
	execAll(t, a, "LISTEN chan1")

	start := time.Now()
	_, err := b.Exec(ctx, "SELECT 1")
	if code := sqlstate(err); code != "53300" {
		t.Fatalf("while the only server connection is pinned to another client: %v (SQLSTATE %q), want 53300", err, code)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("53300 after %s, before borrow_timeout (1s)", waited)
	}

	// The pinned client hears what is sent to its channel while it is idle.
	d := e.direct(t, pgx.QueryExecModeExec)
	if _, err := d.Exec(ctx, "NOTIFY chan1, 'hello'"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := a.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("the listening client got no notification: %v", err)
	}
	if n.Channel != "chan1" || n.Payload != "hello" {
		t.Errorf("notification on %q with payload %q, want chan1 and hello", n.Channel, n.Payload)
	}

	// When it leaves, the connection serves the other client again.
	a.Close(ctx)
	var one int
	if err := b.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("after the pinned client left: %v", err)
	}
}

// TestStatementsThatDoNotPin checks that statements whose effect ends with
// their transaction, and settings Sluice tracks, leave the client free:
// with a single server connection another client can use it right after.
func TestStatementsThatDoNotPin(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	probe := e.connect(t)
	for _, tc := range []struct {
		name       string
		statements []string
	}{
		{"SELECT", []string{"SELECT 1", "SELECT now()"}},
		{"SET LOCAL in a transaction", []string{"BEGIN", "SET LOCAL work_mem = '8MB'", "COMMIT"}},
		{"transaction-level advisory lock", []string{"BEGIN", "SELECT pg_advisory_xact_lock(1)", "COMMIT"}},
		{"transaction-level advisory lock alone", []string{"SELECT pg_try_advisory_xact_lock(2)"}},
		{"set_config local", []string{"SELECT set_config('work_mem', '8MB', true)"}},
		{"temp table ON COMMIT DROP", []string{"BEGIN", "CREATE TEMP TABLE t2 (x int) ON COMMIT DROP", "INSERT INTO t2 VALUES (1)", "COMMIT"}},
		{"cursor without hold in a transaction", []string{"BEGIN", "DECLARE c CURSOR FOR SELECT 1", "FETCH ALL FROM c", "COMMIT"}},
		{"SET TRANSACTION", []string{"BEGIN", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", "COMMIT"}},
		{"tracked SET", []string{"SET search_path TO public"}},
		{"tracked SET SESSION", []string{"SET SESSION statement_timeout = '5s'"}},
		{"SET TIME ZONE", []string{"SET TIME ZONE 'UTC'"}},
		{"tracked RESET", []string{"SET work_mem = '8MB'", "RESET work_mem"}},
		{"RESET ALL", []string{"RESET ALL"}},
		{"DISCARD ALL", []string{"DISCARD ALL"}},
		{"RESET ROLE alone", []string{"RESET ROLE"}},
		{"SET SESSION AUTHORIZATION DEFAULT", []string{"SET SESSION AUTHORIZATION DEFAULT"}},
		{"several statements in one query", []string{"BEGIN; SET LOCAL work_mem = '8MB'; SELECT pg_advisory_xact_lock(3); COMMIT"}},
		{"key words in strings and comments", []string{
			"SELECT 'LISTEN x; PREPARE p AS SELECT 1' AS s /* CREATE TEMP TABLE y (x int) */ -- SELECT pg_advisory_lock(1)",
			"SELECT $$SET ROLE app$$, $tag$ LOAD 'x' $tag$, \"pg_advisory_lock\" FROM (SELECT 1 AS \"pg_advisory_lock\") s",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.connect(t)
			execAll(t, c, tc.statements...)
			start := time.Now()
			if _, err := probe.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatalf("another client cannot use the only server connection after %s (waited %s): %v",
					strings.Join(tc.statements, "; "), time.Since(start).Round(time.Millisecond), err)
			}
			if got := pinnedReasons(t, e, c); len(got) != 0 {
				t.Errorf("session pinned for %q", got)
			}
			// The client goes on as usual.
			var n int
			if err := c.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
				t.Errorf("SELECT 2 afterwards: %d, %v", n, err)
			}
			c.Close(ctx)
		})
	}
}

// TestUnpin checks that the statement clearing a kind of session state
// also ends the pin it caused: the server connection goes back to the pool
// at the next idle point.
func TestUnpin(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	probe := e.connect(t)
	everything := []string{
		"SET SESSION AUTHORIZATION app",
		"SET ROLE app",
		"SELECT set_config('work_mem', '8MB', false)",
		"SET work_mem FROM CURRENT",
		"PREPARE p1 AS SELECT 1",
		"LISTEN chan1",
		"CREATE TEMP TABLE tt (x int)",
		"BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT",
		"SELECT pg_advisory_lock(1)",
		"SET my.setting = 'x'",
	}
	for _, tc := range []struct {
		name    string
		pin     []string
		reasons []string
		unpin   string
	}{
		{"DISCARD ALL", everything, []string{reasonSessionAuth, reasonSetRole, reasonSetConfig, reasonFromCurrent,
			reasonSQLPrepare, reasonListen, reasonTemp, reasonWithHold, reasonAdvisoryLock, reasonUntrackedSet}, "DISCARD ALL"},
		{"DEALLOCATE ALL", []string{"PREPARE p1 AS SELECT 1", "PREPARE p2 AS SELECT 2"}, []string{reasonSQLPrepare}, "DEALLOCATE ALL"},
		{"DEALLOCATE PREPARE ALL", []string{"PREPARE p1 AS SELECT 1"}, []string{reasonSQLPrepare}, "DEALLOCATE PREPARE ALL"},
		{"UNLISTEN *", []string{"LISTEN chan1", "LISTEN chan2"}, []string{reasonListen}, "UNLISTEN *"},
		{"pg_advisory_unlock_all", []string{"SELECT pg_advisory_lock(1)", "SELECT pg_try_advisory_lock_shared(2)"}, []string{reasonAdvisoryLock},
			"SELECT pg_advisory_unlock_all()"},
		{"DISCARD TEMP", []string{"CREATE TEMP TABLE tt (x int)", "CREATE TEMP SEQUENCE ts"}, []string{reasonTemp}, "DISCARD TEMP"},
		{"DISCARD TEMPORARY", []string{"CREATE TEMP TABLE tt (x int)"}, []string{reasonTemp}, "DISCARD TEMPORARY"},
		{"CLOSE ALL", []string{"BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT"}, []string{reasonWithHold}, "CLOSE ALL"},
		{"RESET ROLE", []string{"SET ROLE app"}, []string{reasonSetRole}, "RESET ROLE"},
		{"SET ROLE NONE", []string{"SET ROLE app"}, []string{reasonSetRole}, "SET ROLE NONE"},
		{"RESET SESSION AUTHORIZATION", []string{"SET SESSION AUTHORIZATION app"}, []string{reasonSessionAuth}, "RESET SESSION AUTHORIZATION"},
		{"SET SESSION AUTHORIZATION DEFAULT", []string{"SET SESSION AUTHORIZATION app"}, []string{reasonSessionAuth},
			"SET SESSION AUTHORIZATION DEFAULT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.connect(t)
			execAll(t, c, tc.pin...)
			awaitPinned(t, e, c, tc.reasons...)
			execAll(t, c, tc.unpin)
			if _, err := probe.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatalf("after %s another client cannot use the only server connection: %v", tc.unpin, err)
			}
			if got := pinnedReasons(t, e, c); len(got) != 0 {
				t.Errorf("after %s the session is still pinned for %q", tc.unpin, got)
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
				t.Errorf("SELECT 2 afterwards: %d, %v", n, err)
			}
			c.Close(ctx)
		})
	}

	t.Run("two reasons need both statements", func(t *testing.T) {
		c := e.connect(t)
		execAll(t, c, "LISTEN chan1", "CREATE TEMP TABLE tt (x int)")
		awaitPinned(t, e, c, reasonListen, reasonTemp)
		execAll(t, c, "UNLISTEN *")
		awaitPinned(t, e, c, reasonTemp)
		if _, err := probe.Exec(ctx, "SELECT 1"); sqlstate(err) != "53300" {
			t.Fatalf("with the temporary table left, another client got %v, want 53300 (the connection stays pinned)", err)
		}
		execAll(t, c, "DISCARD TEMP")
		if _, err := probe.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("after UNLISTEN * and DISCARD TEMP another client cannot use the only server connection: %v", err)
		}
		if got := pinnedReasons(t, e, c); len(got) != 0 {
			t.Errorf("still pinned for %q", got)
		}
		c.Close(ctx)
	})
}

// TestNothingLeaksToTheNextClient leaves every kind of session state on
// the only server connection and checks that the next client sees none of
// it.
func TestNothingLeaksToTheNextClient(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 1"})
	ctx := context.Background()
	d := e.direct(t, pgx.QueryExecModeExec)
	if _, err := d.Exec(ctx, "CREATE TABLE leak_t (id int)"); err != nil {
		t.Fatal(err)
	}
	d.Close(ctx)

	state := []string{
		"CREATE TEMP TABLE tt (x int)",
		"SELECT pg_advisory_lock(7)",
		"LISTEN leak",
		"PREPARE p AS SELECT 1",
		"BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT",
		"SET my.leak = 'x'",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET search_path TO pg_catalog",
		"SET statement_timeout = '123s'",
		"SET ROLE app",
	}
	checks := []struct{ what, query string }{
		{"the temporary table", "SELECT to_regclass('pg_temp.tt') IS NULL"},
		{"the advisory lock", "SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory')"},
		{"advisory lock 7 is free", "SELECT pg_try_advisory_xact_lock(7)"},
		{"prepared statements", "SELECT count(*) = 0 FROM pg_catalog.pg_prepared_statements"},
		{"LISTEN", "SELECT count(*) = 0 FROM pg_catalog.pg_listening_channels()"},
		// The query's own unnamed portal is listed in pg_cursors too.
		{"the cursor", "SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE name <> '')"},
		{"the custom setting", "SELECT coalesce(current_setting('my.leak', true), '') = ''"},
		{"the transaction characteristics", "SELECT current_setting('default_transaction_isolation') = 'read committed'"},
		{"search_path", `SELECT current_setting('search_path') = '"$user", public'`},
		{"statement_timeout", "SELECT current_setting('statement_timeout') = '0'"},
		{"the role", "SELECT current_setting('role') = 'none'"},
		{"the uncommitted row", "SELECT count(*) = 0 FROM public.leak_t"},
		{"the transaction", "SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%')"},
	}
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"idle", nil},
		{"inside a transaction", []string{"BEGIN", "INSERT INTO public.leak_t VALUES (1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.connect(t)
			execAll(t, c, state...)
			if _, err := c.PgConn().Prepare(ctx, "leak_stmt", "SELECT 2", nil); err != nil {
				t.Fatal(err)
			}
			execAll(t, c, tc.extra...)
			var before uint32
			if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&before); err != nil {
				t.Fatal(err)
			}
			c.Close(ctx)

			next := e.connect(t)
			var after uint32
			if err := next.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after != before {
				t.Logf("the next client got a new server connection (backend %d, was %d)", after, before)
			}
			for _, ch := range checks {
				ok, err := isTrue(ctx, next, ch.query)
				if err != nil || !ok {
					t.Errorf("%s leaked to the next client (%s: %t, %v)", ch.what, ch.query, ok, err)
				}
			}
			next.Close(ctx)
		})
	}
}

// createWhoSchemas creates schemas s0 to s9 and public, each with a table
// who whose one row names the schema, so that SELECT v FROM who tells
// which search_path a statement really used.
func createWhoSchemas(t testing.TB, e *testEnv) {
	t.Helper()
	d := e.direct(t, pgx.QueryExecModeExec)
	var sql strings.Builder
	sql.WriteString("CREATE TABLE public.who (v text); INSERT INTO public.who VALUES ('public');")
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&sql, "CREATE SCHEMA s%d; CREATE TABLE s%d.who (v text); INSERT INTO s%d.who VALUES ('s%d');", i, i, i, i)
	}
	execAll(t, d, sql.String())
	d.Close(context.Background())
}

func TestTrackedSettingsOfHundredClients(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 5"})
	createWhoSchemas(t, e)
	ctx := context.Background()
	zones := []string{"UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris", "Australia/Sydney", "America/Sao_Paulo", "Africa/Cairo"}

	stop := make(chan struct{})
	peak := e.watchServerConns(t, stop)
	const clients, statements = 100, 20
	runClients(t, clients, func(i int) error {
		return trackedClient(ctx, e, fmt.Sprintf("s%d", i%10), zones[i%len(zones)], statements)
	})
	close(stop)
	if p := <-peak; p > 5 {
		t.Errorf("PostgreSQL saw %d connections from sluice, want at most 5", p)
	}
}

// runClients runs client(i) for i in [0, n) concurrently, waits for all of
// them and reports their errors.
func runClients(t *testing.T, n int, client func(i int) error) {
	t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := client(i); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	reportClientErrors(t, errs)
}

// reportClientErrors reports the first ten errors of many clients and
// how many clients failed.
func reportClientErrors(t *testing.T, errs <-chan error) {
	t.Helper()
	failed := 0
	for err := range errs {
		if failed++; failed <= 10 {
			t.Error(err)
		}
	}
	if failed > 10 {
		t.Errorf("... %d clients failed in all", failed)
	}
}

// trackedClient sets its own search_path and time zone, checks that each
// of n statements sees them, and that its session is not pinned.
func trackedClient(ctx context.Context, e *testEnv, schema, zone string, n int) error {
	c, err := dial(ctx, e.url(), pgx.QueryExecModeExec)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SET search_path TO "+schema); err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "SET TimeZone TO '"+zone+"'"); err != nil {
		return err
	}
	for j := 0; j < n; j++ {
		var path, tz, who string
		if err := c.QueryRow(ctx, "SELECT current_setting('search_path'), current_setting('TimeZone'), (SELECT v FROM who)").Scan(&path, &tz, &who); err != nil {
			return fmt.Errorf("statement %d: %w", j, err)
		}
		if path != schema || tz != zone || who != schema {
			return fmt.Errorf("statement %d saw search_path %q, TimeZone %q, table %s.who; want %q, %q, %s.who", j, path, tz, who, schema, zone, schema)
		}
	}
	s, ok := findSession(e, c.PgConn().PID())
	if !ok {
		return fmt.Errorf("Sluice lists no session with process ID %d", c.PgConn().PID())
	}
	if len(s.Pinned) != 0 {
		return fmt.Errorf("session pinned for %q", s.Pinned)
	}
	return nil
}

// settingsQuery shows the settings a client sees and the schema its
// search_path really resolves to.
const settingsQuery = `SELECT concat_ws(' | ', current_setting('search_path'), (SELECT v FROM who),
	current_setting('TimeZone'), current_setting('statement_timeout'), current_setting('work_mem'),
	current_setting('DateStyle'), current_setting('application_name'), current_setting('lock_timeout'))`

// TestTrackedSettings checks settings Sluice tracks instead of pinning:
// each client sees its own values whatever other clients did on the same
// server connection, exactly as it would talking to PostgreSQL itself.
func TestTrackedSettings(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	createWhoSchemas(t, e)
	ctx := context.Background()

	t.Run("same as PostgreSQL step by step", func(t *testing.T) {
		// Each step runs with the simple protocol unless it starts with
		// "extended:".
		steps := []string{
			"SELECT 1",
			"SET search_path TO s1",
			"SET TimeZone TO 'Asia/Tokyo'",
			"SET statement_timeout = '50ms'",
			"SELECT pg_sleep(0.2)",
			"RESET statement_timeout",
			"SELECT pg_sleep(0.1)",
			"BEGIN; SET search_path TO s2; ROLLBACK",
			"BEGIN; SET search_path TO s2; COMMIT",
			"BEGIN; SET search_path TO s3; SAVEPOINT a; SET search_path TO s4; ROLLBACK TO SAVEPOINT a; COMMIT",
			"BEGIN; SET LOCAL search_path TO s5; COMMIT",
			"SET TimeZone TO 'Not/AZone'",
			"SET work_mem = '8MB'; SET DateStyle = 'German'; SET application_name = 'tracked'",
			"SET SESSION TimeZone TO 'Europe/Paris'",
			"SET TIME ZONE 'America/New_York'",
			"SET SCHEMA 's6'",
			"SET lock_timeout TO DEFAULT",
			"SET lock_timeout = '3s'",
			"extended:SET search_path TO s7",
			"extended:SET TimeZone TO 'Africa/Cairo'",
			"SELECT set_config('search_path', 's8', true)",
			"SET search_path = DEFAULT",
			"SET search_path TO s1, public",
			"RESET ALL",
			"SET search_path TO s5; SET TimeZone TO 'Asia/Tokyo'; SET statement_timeout = '9s'",
			"DISCARD ALL",
		}
		direct := e.direct(t, pgx.QueryExecModeExec)
		want := settingsTranscript(t, direct, nil, steps)
		direct.Close(ctx)

		c := e.connect(t)
		noise := e.connect(t)
		got := settingsTranscript(t, c, noise, steps)
		if len(got) != len(want) {
			t.Fatalf("transcript has %d lines, PostgreSQL's %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("through Sluice: %s\n          PostgreSQL: %s", got[i], want[i])
			}
		}
		if r := pinnedReasons(t, e, c); len(r) != 0 {
			t.Errorf("session pinned for %q", r)
		}
		c.Close(ctx)
		noise.Close(ctx)
	})

	t.Run("statement_timeout stays with its client", func(t *testing.T) {
		var def string
		d := e.direct(t, pgx.QueryExecModeExec)
		if err := d.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&def); err != nil {
			t.Fatal(err)
		}
		d.Close(ctx)

		a := e.connect(t)
		b := e.connect(t)
		execAll(t, a, "SET statement_timeout = '50ms'")
		for round := 0; round < 2; round++ {
			// b gets the very server connection a used.
			var bTimeout string
			if err := b.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&bTimeout); err != nil {
				t.Fatal(err)
			}
			if bTimeout != def {
				t.Errorf("round %d: another client sees statement_timeout %q, want the default %q", round, bTimeout, def)
			}
			if _, err := b.Exec(ctx, "SELECT pg_sleep(0.2)"); err != nil {
				t.Errorf("round %d: another client's pg_sleep(0.2): %v", round, err)
			}
			if _, err := a.Exec(ctx, "SELECT pg_sleep(0.2)"); sqlstate(err) != "57014" {
				t.Errorf("round %d: pg_sleep(0.2) with statement_timeout 50ms: %v, want 57014", round, err)
			}
		}
		execAll(t, a, "RESET statement_timeout")
		if _, err := a.Exec(ctx, "SELECT pg_sleep(0.2)"); err != nil {
			t.Errorf("after RESET statement_timeout: %v", err)
		}
		var aTimeout string
		if err := a.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&aTimeout); err != nil || aTimeout != def {
			t.Errorf("after RESET statement_timeout the client sees %q (%v), want %q", aTimeout, err, def)
		}
		a.Close(ctx)
		b.Close(ctx)
	})

	t.Run("RESET ALL and DISCARD ALL", func(t *testing.T) {
		var defZone, defMem string
		d := e.direct(t, pgx.QueryExecModeExec)
		if err := d.QueryRow(ctx, "SELECT current_setting('TimeZone'), current_setting('work_mem')").Scan(&defZone, &defMem); err != nil {
			t.Fatal(err)
		}
		d.Close(ctx)
		c := e.connect(t)
		noise := e.connect(t)
		for _, reset := range []string{"RESET ALL", "DISCARD ALL"} {
			execAll(t, c, "SET search_path TO s3", "SET TimeZone TO 'Asia/Tokyo'", "SET work_mem = '8MB'", reset)
			execAll(t, noise, "SET search_path TO s9", "SET TimeZone TO 'Europe/Paris'", "SET work_mem = '1MB'", "SELECT 1")
			var path, who, zone, mem string
			if err := c.QueryRow(ctx, "SELECT current_setting('search_path'), (SELECT v FROM who), current_setting('TimeZone'), current_setting('work_mem')").
				Scan(&path, &who, &zone, &mem); err != nil {
				t.Fatal(err)
			}
			if path != `"$user", public` || who != "public" || zone != defZone || mem != defMem {
				t.Errorf("after %s: search_path %q (who: %s), TimeZone %q, work_mem %q; want the defaults %q (public), %q, %q",
					reset, path, who, zone, mem, `"$user", public`, defZone, defMem)
			}
		}
		if r := pinnedReasons(t, e, c); len(r) != 0 {
			t.Errorf("session pinned for %q", r)
		}
		c.Close(ctx)
		noise.Close(ctx)
	})

	t.Run("a SET in a rolled back transaction does not stick", func(t *testing.T) {
		c := e.connect(t)
		execAll(t, c, "SET search_path TO s1")
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET search_path TO s2"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		execAll(t, c, "BEGIN; SET search_path TO s3; ROLLBACK")
		noise := e.connect(t)
		execAll(t, noise, "SET search_path TO s2", "SELECT 1")
		var path, who string
		if err := c.QueryRow(ctx, "SELECT current_setting('search_path'), (SELECT v FROM who)").Scan(&path, &who); err != nil {
			t.Fatal(err)
		}
		if path != "s1" || who != "s1" {
			t.Errorf("after rolled back SETs: search_path %q (who: %s), want s1", path, who)
		}
		c.Close(ctx)
		noise.Close(ctx)
	})
}

// settingsTranscript runs steps on c and records, after each, the error
// or the settings c sees. When noise is not nil it sets other values on
// the server connection between steps.
func settingsTranscript(t *testing.T, c, noise *pgx.Conn, steps []string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, step := range steps {
		protocol, sql := "simple", step
		if s, ok := strings.CutPrefix(step, "extended:"); ok {
			protocol, sql = "extended", s
		}
		line := step + " => "
		if err := execSQL(ctx, c, protocol, sql); err != nil {
			line += "ERROR " + sqlstate(err) + "; "
		}
		if noise != nil {
			execAll(t, noise, "SET search_path TO s9", "SET TimeZone TO 'Pacific/Auckland'", "SET statement_timeout = '7s'",
				"SET work_mem = '1MB'", "SET DateStyle = 'SQL, DMY'", "SET application_name = 'noise'", "SET lock_timeout = '1s'", "SELECT 1")
		}
		var settings string
		if err := c.QueryRow(ctx, settingsQuery).Scan(&settings); err != nil {
			settings = "ERROR " + sqlstate(err)
		}
		out = append(out, line+settings)
	}
	return out
}

func TestTrackedSetPinsWhenNotTracked(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, pinning string
		pins, free    []string
	}{
		{
			name:    `on_set = "pin"`,
			pinning: `on_set = "pin"`,
			pins:    []string{"SET search_path TO public", "SET TimeZone TO 'UTC'", "RESET work_mem", "SET SESSION statement_timeout = '5s'"},
			free:    []string{"SET LOCAL search_path TO public", "SELECT 1"},
		},
		{
			name:    "a short track list",
			pinning: `track = ["search_path"]`,
			pins:    []string{"SET TimeZone TO 'UTC'", "SET statement_timeout = '5s'"},
			free:    []string{"SET search_path TO public", "RESET search_path", "SET SCHEMA 'public'"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{pool: oneConnPool, pinning: tc.pinning})
			probe := e.connect(t)
			for _, sql := range tc.free {
				c := e.connect(t)
				execAll(t, c, sql)
				if _, err := probe.Exec(ctx, "SELECT 1"); err != nil {
					t.Errorf("after %s another client cannot use the only server connection: %v", sql, err)
				}
				if got := pinnedReasons(t, e, c); len(got) != 0 {
					t.Errorf("%s pinned the session for %q", sql, got)
				}
				c.Close(ctx)
			}
			for _, sql := range tc.pins {
				c := e.connect(t)
				execAll(t, c, sql)
				awaitPinned(t, e, c, reasonUntrackedSet)
				c.Close(ctx)
			}
		})
	}
}
