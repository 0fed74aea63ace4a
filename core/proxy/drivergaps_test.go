package proxy_test

// Acceptance tests for what drivers do that Sluice must pass on unchanged:
// large messages, statements longer than the classifier's read buffer,
// startup parameters, the backend process ID in session mode, and many
// logins while every server connection is busy. Each compares Sluice with
// PostgreSQL itself where PostgreSQL defines the answer.

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// randomBytes returns n bytes that do not compress, the same for the same
// seed, so that a failure can be reproduced.
func randomBytes(n int, seed byte) []byte {
	var key [32]byte
	key[0] = seed
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// md5Hex is PostgreSQL's md5() of b.
func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// summary names a value that may be megabytes long by its length and
// digest, for failure messages.
func summary(s string) string {
	if len(s) <= 80 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%d bytes, md5 %s, starting %q", len(s), md5Hex([]byte(s)), s[:40])
}

// jsonDocument returns a JSON array of at least n bytes.
func jsonDocument(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": %d, "name": "item-%d", "tags": ["a", "b"], "ok": true}`, i, i)
	}
	b.WriteByte(']')
	return b.String()
}

// queryText runs query with args on c and returns its one text value.
func queryText(ctx context.Context, c *pgx.Conn, query string, args ...any) (string, error) {
	var s string
	err := c.QueryRow(ctx, query, args...).Scan(&s)
	return s, err
}

// largeValue is a statement with one large parameter whose one text
// result is known in advance.
type largeValue struct {
	name  string
	query string
	arg   any
	want  string
}

// largeValues are the parameters of TestLargeBindToNamedStatement: each
// Bind message is well over the 16 KiB Sluice reads in one go.
func largeValues() []largeValue {
	text := strings.Repeat("sluice-", 10000) // 70 KB
	small := randomBytes(70<<10, 1)
	doc := jsonDocument(1 << 20)
	huge := randomBytes(64<<20, 2)
	return []largeValue{
		{"text 70 KB", "SELECT $1::text", text, text},
		{"bytea 70 KB", "SELECT $1::bytea::text", small, `\x` + hex.EncodeToString(small)},
		{"json 1 MiB", "SELECT $1::json::text", doc, doc},
		{"bytea 64 MiB", "SELECT md5($1::bytea)", huge, md5Hex(huge)},
	}
}

// TestLargeBindToNamedStatement binds large parameters to the named
// statements pgx prepares in its default mode (QueryExecModeCacheStatement)
// and checks that the server receives them exactly as it does from pgx
// directly, twice, with another client using the only server connection in
// between.
func TestLargeBindToNamedStatement(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	direct := e.direct(t, pgx.QueryExecModeCacheStatement)
	c := e.connectMode(t, pgx.QueryExecModeCacheStatement)
	noise := e.connectMode(t, pgx.QueryExecModeCacheStatement)
	for _, tc := range largeValues() {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := queryText(ctx, direct, tc.query, tc.arg); err != nil || got != tc.want {
				t.Fatalf("PostgreSQL itself answers %s, %v; want %s", summary(got), err, summary(tc.want))
			}
			for round := 0; round < 2; round++ {
				got, err := queryText(ctx, c, tc.query, tc.arg)
				if err != nil {
					t.Fatalf("round %d: %s through Sluice: %v; PostgreSQL answers it", round, tc.query, err)
				}
				if got != tc.want {
					t.Fatalf("round %d: %s through Sluice returned %s, PostgreSQL %s", round, tc.query, summary(got), summary(tc.want))
				}
				if _, err := noise.Exec(ctx, "SELECT $1::int", round); err != nil {
					t.Fatalf("the other client: %v", err)
				}
			}
		})
	}
}

// TestLargeBindToUnnamedStatement binds a 70 KB bytea to the unnamed
// statement: in one batch (pgx QueryExecModeExec and DescribeExec), and
// after the statement was prepared in an earlier transaction while another
// client used the only server connection in between (PostgreSQL keeps the
// unnamed statement until the client's next Parse or Query). A 100-byte
// parameter takes the same steps, to show that only the size differs.
func TestLargeBindToUnnamedStatement(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	const query = "SELECT md5($1::bytea)"
	noise := e.connect(t)
	for _, size := range []int{100, 70 << 10} {
		value := randomBytes(size, 3)
		want := md5Hex(value)
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
			t.Run(fmt.Sprintf("%d bytes/one batch/%s", size, mode), func(t *testing.T) {
				if got, err := queryText(ctx, e.direct(t, mode), query, value); err != nil || got != want {
					t.Fatalf("PostgreSQL itself answers %q, %v; want %q", got, err, want)
				}
				c := e.connectMode(t, mode)
				if got, err := queryText(ctx, c, query, value); err != nil || got != want {
					t.Fatalf("through Sluice: %q, %v; PostgreSQL answers %q", got, err, want)
				}
			})
		}
		t.Run(fmt.Sprintf("%d bytes/prepared in an earlier transaction", size), func(t *testing.T) {
			run := func(c *pgx.Conn) (string, error) {
				if _, err := c.PgConn().Prepare(ctx, "", query, nil); err != nil {
					return "", fmt.Errorf("Parse: %w", err)
				}
				// A simple Query destroys the unnamed statement of the
				// server connection it runs on: the only one, through Sluice.
				if _, err := noise.Exec(ctx, "SELECT 1"); err != nil {
					return "", fmt.Errorf("the other client: %w", err)
				}
				r := c.PgConn().ExecPrepared(ctx, "", [][]byte{value}, []int16{1}, nil).Read()
				if r.Err != nil {
					return "", r.Err
				}
				if len(r.Rows) != 1 || len(r.Rows[0]) != 1 {
					return "", fmt.Errorf("%d rows", len(r.Rows))
				}
				return string(r.Rows[0][0]), nil
			}
			if got, err := run(e.direct(t, pgx.QueryExecModeExec)); err != nil || got != want {
				t.Fatalf("PostgreSQL itself answers %q, %v; want %q", got, err, want)
			}
			if got, err := run(e.connect(t)); err != nil || got != want {
				t.Fatalf("through Sluice: %q, %v; PostgreSQL answers %q", got, err, want)
			}
		})
	}
}

// TestLargeParse sends a 100 KB query text as a named statement (pgx's
// default mode) and as the unnamed one (QueryExecModeExec and
// DescribeExec), twice with another client on the only server connection
// in between, and checks the answers against PostgreSQL's.
func TestLargeParse(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	query := "SELECT ($1::int + length('" + strings.Repeat("x", 100<<10) + "'))::text"
	noise := e.connect(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			want, err := queryText(ctx, e.direct(t, mode), query, 7)
			if err != nil || want != fmt.Sprint(7+100<<10) {
				t.Fatalf("PostgreSQL itself answers %q, %v", want, err)
			}
			c := e.connectMode(t, mode)
			for round := 0; round < 2; round++ {
				if got, err := queryText(ctx, c, query, 7); err != nil || got != want {
					t.Fatalf("round %d through Sluice: %q, %v; PostgreSQL answers %q", round, got, err, want)
				}
				if _, err := noise.Exec(ctx, "SELECT 1"); err != nil {
					t.Fatalf("round %d: the other client cannot use the only server connection: %v", round, err)
				}
			}
		})
	}
}

// awaitReleased waits until client c's session holds no server connection
// and fails the test when that does not happen within two seconds.
func awaitReleased(t testing.TB, e *testEnv, c *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for sessionOf(t, e, c).Holds {
		if time.Now().After(deadline) {
			t.Fatalf("the session still holds its server connection 2s after its statement ended (pinned for %q)", pinnedReasons(t, e, c))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstValue runs sql on c with the simple query protocol ("simple"), as
// one unnamed extended-protocol statement ("extended"), or as the named
// statement "long" prepared and then executed ("named"), and returns the
// first column of the last result's first row as text.
func firstValue(ctx context.Context, c *pgx.Conn, protocol, sql string) (string, error) {
	var r *pgconn.Result
	switch protocol {
	case "simple":
		rs, err := c.PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			return "", err
		}
		r = rs[len(rs)-1]
	case "extended":
		r = c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	case "named":
		if _, err := c.PgConn().Prepare(ctx, "long", sql, nil); err != nil {
			return "", err
		}
		r = c.PgConn().ExecPrepared(ctx, "long", nil, nil, nil).Read()
		if err := c.PgConn().Deallocate(ctx, "long"); err != nil && r.Err == nil {
			return "", err
		}
	default:
		panic("unknown protocol " + protocol)
	}
	if r.Err != nil {
		return "", r.Err
	}
	if len(r.Rows) == 0 || len(r.Rows[0]) == 0 {
		return "", nil
	}
	return string(r.Rows[0][0]), nil
}

// longInList returns a SELECT of at least n bytes: a count over an IN list.
func longInList(n int) string {
	var b strings.Builder
	b.WriteString("SELECT count(*) FROM generate_series(1, 100000) AS g(x) WHERE x IN (")
	for i := 1; b.Len() < n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, i*3)
	}
	b.WriteString(")")
	return b.String()
}

// longSearchPath returns a SET of search_path of at least n bytes: many
// schemas that do not exist (PostgreSQL allows that), then s1, which
// createWhoSchemas creates.
func longSearchPath(n int) string {
	var b strings.Builder
	b.WriteString("SET search_path = ")
	for i := 1; b.Len() < n; i++ {
		fmt.Fprintf(&b, "no_such_schema_%05d, ", i)
	}
	b.WriteString("s1")
	return b.String()
}

// TestLongStatementIsClassified checks that statements longer than the
// 16 KiB Sluice reads in one go are classified like any other: a 60 KB
// SELECT leaves the session unpinned and its server connection goes back
// to the pool, and a 20 KB SET of search_path, a tracked parameter, is
// tracked rather than pinned and reads back as it does on PostgreSQL
// itself, also in the next transaction after another client used the only
// server connection.
func TestLongStatementIsClassified(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	createWhoSchemas(t, e)
	ctx := context.Background()

	selectSQL := longInList(60 << 10)
	for _, protocol := range []string{"simple", "extended", "named"} {
		t.Run("60 KB SELECT/"+protocol, func(t *testing.T) {
			want, err := firstValue(ctx, e.direct(t, pgx.QueryExecModeExec), protocol, selectSQL)
			if err != nil || want == "0" {
				t.Fatalf("PostgreSQL itself answers %q, %v", want, err)
			}
			c := e.connect(t)
			if got, err := firstValue(ctx, c, protocol, selectSQL); err != nil || got != want {
				t.Fatalf("through Sluice: %q, %v; PostgreSQL answers %q", got, err, want)
			}
			awaitPinned(t, e, c)
			awaitReleased(t, e, c)
		})
	}

	setSQL := longSearchPath(20 << 10)
	const readBack = "SELECT current_setting('search_path') || ' -> ' || (SELECT v FROM who)"
	for _, protocol := range []string{"simple", "extended"} {
		t.Run("20 KB SET search_path/"+protocol, func(t *testing.T) {
			d := e.direct(t, pgx.QueryExecModeExec)
			if err := execSQL(ctx, d, protocol, setSQL); err != nil {
				t.Fatalf("PostgreSQL itself: %v", err)
			}
			want, err := firstValue(ctx, d, "simple", readBack)
			if err != nil || !strings.HasSuffix(want, "s1 -> s1") {
				t.Fatalf("PostgreSQL itself reads back %s, %v", summary(want), err)
			}

			c := e.connect(t)
			noise := e.connect(t)
			if err := execSQL(ctx, c, protocol, setSQL); err != nil {
				t.Fatalf("through Sluice: %v", err)
			}
			awaitPinned(t, e, c)
			awaitReleased(t, e, c)
			for _, inTx := range []bool{false, true} {
				// Another client sets its own search_path on the only server connection.
				execAll(t, noise, "SET search_path TO s9", "SELECT 1")
				if inTx {
					execAll(t, c, "BEGIN")
				}
				got, err := firstValue(ctx, c, "simple", readBack)
				if err != nil {
					t.Fatalf("reading back search_path (in a transaction: %t): %v", inTx, err)
				}
				if inTx {
					execAll(t, c, "COMMIT")
				}
				if got != want {
					t.Errorf("through Sluice the client reads back %s (in a transaction: %t), PostgreSQL %s", summary(got), inTx, summary(want))
				}
			}
			awaitPinned(t, e, c)
		})
	}
}

// dialParams connects to url with pgx (QueryExecModeExec) and the run-time
// parameters params in the startup packet.
func dialParams(ctx context.Context, url string, params map[string]string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// readOnlyTranscript runs the same steps against url for a client that
// logged in with default_transaction_read_only=on and one that did not,
// alternately, and records what each saw.
func readOnlyTranscript(t *testing.T, url string) []string {
	t.Helper()
	ctx := context.Background()
	ro, err := dialParams(ctx, url, map[string]string{"default_transaction_read_only": "on"})
	if err != nil {
		t.Fatalf("connect with default_transaction_read_only=on: %v", err)
	}
	defer ro.Close(ctx)
	plain, err := dialParams(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	var out []string
	record := func(who string, c *pgx.Conn, sql string) {
		v, err := firstValue(ctx, c, "simple", sql)
		if err != nil {
			v = "ERROR " + sqlstate(err)
		}
		out = append(out, fmt.Sprintf("%s: %s => %s", who, sql, v))
	}
	for round := 0; round < 3; round++ {
		record("read-only client", ro, "SHOW transaction_read_only")
		record("other client", plain, "SHOW transaction_read_only")
		record("read-only client", ro, "BEGIN; SHOW transaction_read_only")
		execAll(t, ro, "COMMIT")
		record("read-only client", ro, "CREATE TABLE ro_probe (x int)")
		record("other client", plain, "BEGIN; SHOW transaction_read_only")
		execAll(t, plain, "ROLLBACK")
	}
	return out
}

// TestStartupParameterDefaultTransactionReadOnly logs in one client with
// default_transaction_read_only=on and another without it on the same
// single server connection: each sees its own setting in every
// transaction, as with PostgreSQL itself.
func TestStartupParameterDefaultTransactionReadOnly(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	want := readOnlyTranscript(t, e.directURL())
	if !strings.HasSuffix(want[0], "=> on") || !strings.HasSuffix(want[1], "=> off") {
		t.Fatalf("PostgreSQL itself: %q", want)
	}
	got := readOnlyTranscript(t, e.url())
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("through Sluice: %s\n          PostgreSQL: %s", got[i], want[i])
		}
	}
}

// TestBadStartupParameter logs in with a parameter value PostgreSQL
// rejects and with a parameter it does not know: the client gets
// PostgreSQL's own error, at connect time as from PostgreSQL, and the next
// client is not affected.
func TestBadStartupParameter(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx := context.Background()
	var defaultStyle string
	if err := e.direct(t, pgx.QueryExecModeExec).QueryRow(ctx, "SHOW DateStyle").Scan(&defaultStyle); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		params map[string]string
	}{
		{"DateStyle=garbage", map[string]string{"DateStyle": "garbage"}},
		{"nosuch_param=1", map[string]string{"nosuch_param": "1"}},
		{"server_version=1", map[string]string{"server_version": "1"}},
		{"is_superuser=on", map[string]string{"is_superuser": "on"}},
		{"log_statement=all", map[string]string{"log_statement": "all"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialParams(ctx, e.directURL(), tc.params)
			var want *pgconn.PgError
			if !errors.As(err, &want) {
				t.Fatalf("PostgreSQL itself accepts %s: %v", tc.name, err)
			}
			c, err := dialParams(ctx, e.url(), tc.params)
			var got *pgconn.PgError
			switch {
			case err == nil:
				c.Close(ctx)
				t.Errorf("Sluice accepts the login with %s; PostgreSQL refuses it at connect: %s %s: %s", tc.name, want.Severity, want.Code, want.Message)
			case !errors.As(err, &got):
				t.Errorf("login with %s through Sluice: %v; PostgreSQL refuses it with %s %s: %s", tc.name, err, want.Severity, want.Code, want.Message)
			case got.Code != want.Code || got.Severity != want.Severity || got.Message != want.Message:
				t.Errorf("login with %s through Sluice: %s %s: %s; PostgreSQL: %s %s: %s", tc.name,
					got.Severity, got.Code, got.Message, want.Severity, want.Code, want.Message)
			}
			next := e.connect(t)
			if style, err := queryText(ctx, next, "SHOW DateStyle"); err != nil || style != defaultStyle {
				t.Errorf("the next client sees DateStyle %q, %v; want the default %q", style, err, defaultStyle)
			}
		})
	}
}

// terminateTranscript runs, on client c, what a DBA does with the process
// ID a client reports: look it up in pg_stat_activity and terminate it;
// then c's next statement must fail. It returns the SQLSTATE of that
// failure and reports steps that went wrong.
func terminateTranscript(t *testing.T, c, su *pgx.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pid := c.PgConn().PID()
	var backend uint32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	if backend != pid {
		t.Errorf("the client was given process ID %d, but its statements run in backend %d", pid, backend)
	}
	var user, db string
	err := su.QueryRow(ctx, "SELECT usename, datname FROM pg_catalog.pg_stat_activity WHERE pid = $1", pid).Scan(&user, &db)
	if err != nil || user != appUser || db != "appdb" {
		t.Errorf("pg_stat_activity row of process ID %d: user %q, database %q, %v; want %s, appdb", pid, user, db, err, appUser)
	}
	var ok bool
	// Waits up to 5s for the backend to end.
	if err := su.QueryRow(ctx, "SELECT pg_catalog.pg_terminate_backend($1, 5000)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %t, %v", pid, ok, err)
	}
	_, err = c.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatalf("the client whose backend %d was terminated still runs statements", pid)
	}
	return sqlstate(err)
}

// TestSessionModeProcessID checks that in session mode a client is given
// its server connection's real process ID, so that pg_stat_activity and
// pg_terminate_backend work with it as with PostgreSQL itself.
func TestSessionModeProcessID(t *testing.T) {
	e := newEnv(t, envOptions{pool: "mode = \"session\"\n  max_connections = 2"})
	su := e.superuser(t)
	want := terminateTranscript(t, e.direct(t, pgx.QueryExecModeExec), su)
	if got := terminateTranscript(t, e.connect(t), su); got != want {
		t.Errorf("after pg_terminate_backend the client's next statement fails with SQLSTATE %q, PostgreSQL's with %q", got, want)
	}
}

// TestLoginStormWhileServerConnectionsAreBusy logs in 300 clients at once
// while both server connections are inside transactions: logging in needs
// no server connection, so every login succeeds. Then the transactions
// commit and everybody's statements run.
func TestLoginStormWhileServerConnectionsAreBusy(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2\n  borrow_timeout = \"3s\"", auth: "md5"})
	ctx := context.Background()
	var holders []pgx.Tx
	for i := 0; i < 2; i++ {
		tx, err := e.connect(t).Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, tx)
	}
	runClients(t, 300, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, err := dial(cctx, e.url(), pgx.QueryExecModeExec)
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		return c.Close(cctx)
	})
	for i, tx := range holders {
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("holder %d: COMMIT: %v", i, err)
		}
	}
	runClients(t, 20, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, err := dial(cctx, e.url(), pgx.QueryExecModeExec)
		if err != nil {
			return err
		}
		defer c.Close(cctx)
		var n int
		if err := c.QueryRow(cctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			return fmt.Errorf("SELECT %d: %d, %v", i, n, err)
		}
		return nil
	})
}
