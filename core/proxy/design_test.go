package proxy_test

// Acceptance tests for guarantees of the session design: a client that
// leaves, stalls or misbehaves at any point costs nobody else anything,
// per-client state is bounded, and the pool's timeouts free server
// connections.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicedb/sluice/core/proxy"
)

// defaultSearchPath is PostgreSQL's default search_path.
const defaultSearchPath = `"$user", public`

// rawClient logs in to Sluice with pgconn and takes over its network
// connection, so that a test can write protocol bytes a driver would not:
// half a message, or a request whose answer it never reads. The caller
// owns the connection; it is also closed when the test ends.
func (e *testEnv) rawClient(ctx context.Context, t testing.TB) net.Conn {
	t.Helper()
	pc, err := pgconn.Connect(ctx, e.url())
	if err != nil {
		t.Fatalf("connect through sluice: %v", err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	return hc.Conn
}

// queryMessage encodes a simple-protocol Query message for sql.
func queryMessage(sql string) []byte {
	b, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

// terminateMessage is the Terminate message.
var terminateMessage = []byte{'X', 0, 0, 0, 4}

// awaitBackends waits until exactly want backends of role app, other than
// su's own, match cond (an SQL condition on pg_stat_activity, with args),
// and fails the test when that does not happen within timeout.
func awaitBackends(t testing.TB, su *pgx.Conn, timeout time.Duration, want int, cond string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	q := "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = 'app' AND pid <> pg_backend_pid() AND (" + cond + ")"
	for {
		var n int
		if err := su.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatalf("waiting for %d backends where %s: %v", want, cond, err)
		}
		if n == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %s, %d backends match %s; want %d", timeout, n, cond, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// adminGet fetches path from the proxy's admin listener and returns the
// body of a 200 answer.
func (e *testEnv) adminGet(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.proxy.AdminAddr().String()+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// loginAndQuery logs a new client in to url and runs a statement, all
// within ctx.
func loginAndQuery(ctx context.Context, url string) error {
	c, err := dial(ctx, url, pgx.QueryExecModeExec)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		return fmt.Errorf("SELECT 41 + 1: %d, %w", n, err)
	}
	return nil
}

// seesDefaultSearchPath checks that c's statements use PostgreSQL's
// default search_path, by its setting and by the who table it resolves to.
func seesDefaultSearchPath(ctx context.Context, c *pgx.Conn) error {
	var path, who string
	if err := c.QueryRow(ctx, "SELECT current_setting('search_path'), (SELECT v FROM who)").Scan(&path, &who); err != nil {
		return err
	}
	if path != defaultSearchPath || who != "public" {
		return fmt.Errorf("search_path %q (table %s.who), want the default %q (public.who)", path, who, defaultSearchPath)
	}
	return nil
}

// TestClientLeavingRightAfterSetLeavesNoState ends 200 clients right after
// they send a tracked SET (search_path), without waiting for its answer,
// with and without a Terminate, from several goroutines, while other
// clients keep checking on the same two server connections that they see
// the default search_path: a departed client's setting never reaches the
// next borrower.
func TestClientLeavingRightAfterSetLeavesNoState(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2", auth: "md5"})
	createWhoSchemas(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var setting sync.WaitGroup
	var settersDone atomic.Bool
	errs := make(chan error, 1000)
	const setters, perSetter = 4, 50
	for g := 0; g < setters; g++ {
		setting.Add(1)
		go func(g int) {
			defer setting.Done()
			for i := 0; i < perSetter; i++ {
				pc, err := pgconn.Connect(ctx, e.url())
				if err != nil {
					errs <- fmt.Errorf("setter %d/%d: %w", g, i, err)
					return
				}
				hc, err := pc.Hijack()
				if err != nil {
					errs <- err
					return
				}
				msg := queryMessage(fmt.Sprintf("SET search_path = s%d", i%10))
				if i%2 == 0 {
					msg = append(msg, terminateMessage...)
				}
				hc.Conn.Write(msg)
				hc.Conn.Close()
			}
		}(g)
	}

	var checking sync.WaitGroup
	var checks atomic.Int64
	for g := 0; g < 3; g++ {
		checking.Add(1)
		go func(g int) {
			defer checking.Done()
			c, err := dial(ctx, e.url(), pgx.QueryExecModeExec)
			if err != nil {
				errs <- fmt.Errorf("checker %d: %w", g, err)
				return
			}
			defer c.Close(context.Background())
			for i := 0; ; i++ {
				if err := seesDefaultSearchPath(ctx, c); err != nil {
					errs <- fmt.Errorf("checker %d, check %d: %w", g, i, err)
					return
				}
				checks.Add(1)
				if i%10 == 0 { // a new login gets a server connection too
					fresh, err := dial(ctx, e.url(), pgx.QueryExecModeExec)
					if err != nil {
						errs <- fmt.Errorf("checker %d, login %d: %w", g, i, err)
						return
					}
					err = seesDefaultSearchPath(ctx, fresh)
					fresh.Close(context.Background())
					if err != nil {
						errs <- fmt.Errorf("checker %d, new client at check %d: %w", g, i, err)
						return
					}
				}
				if settersDone.Load() {
					return
				}
			}
		}(g)
	}
	setting.Wait()
	settersDone.Store(true)
	checking.Wait()
	close(errs)
	reportClientErrors(t, errs)
	t.Logf("%d checks while %d clients left right after their SET", checks.Load(), setters*perSetter)

	// Both server connections, after everything settled.
	a, b := e.connect(t), e.connect(t)
	for i, c := range []*pgx.Conn{a, b} {
		execAll(t, c, "BEGIN")
		if err := seesDefaultSearchPath(ctx, c); err != nil {
			t.Errorf("client %d afterwards: %v", i, err)
		}
	}
}

// TestClientThatStopsReadingBlocksNothing sends a query with a 1 GB result
// from a client that never reads it. Once the server backend is blocked
// writing, the admin endpoints answer, new clients log in and run
// statements, and the proxy shuts down, each within a deadline.
func TestClientThatStopsReadingBlocksNothing(t *testing.T) {
	// Not 127.0.0.1:0: today's validation takes that for the listener's
	// own address and refuses it.
	e := newEnv(t, envOptions{pool: "max_connections = 2", admin: `address = "localhost:0"`})
	su := e.superuser(t)
	ctx := context.Background()
	stuck := e.rawClient(ctx, t)
	heapBefore := heapInUse()
	if _, err := stuck.Write(queryMessage("SELECT repeat('x', 1000) FROM generate_series(1, 1000000) /* stuck-reader */")); err != nil {
		t.Fatal(err)
	}
	// The backend waits for Sluice to take more of the result: Sluice's
	// writes to the client are blocked, and Sluice holds a bounded part
	// of the result (the proxy runs in this process: its heap is ours).
	awaitBackends(t, su, 20*time.Second, 1, "query LIKE '%stuck-reader%' AND wait_event = 'ClientWrite'")
	time.Sleep(500 * time.Millisecond)
	if grown := heapInUse() - heapBefore; grown > 64<<20 {
		t.Errorf("the heap grew by %d MiB while a 1 GB result waited for a client that reads nothing", grown>>20)
	}

	bounded := func(what string, timeout time.Duration, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := f(ctx); err != nil {
			t.Errorf("%s while a client does not read: %v", what, err)
		}
	}
	bounded("GET /sessions", 5*time.Second, func(ctx context.Context) error {
		body, err := e.adminGet(ctx, "/sessions")
		if err != nil {
			return err
		}
		var out struct {
			Sessions []proxy.SessionInfo `json:"sessions"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		if len(out.Sessions) == 0 {
			return fmt.Errorf("no sessions listed: %s", body)
		}
		return nil
	})
	bounded("GET /pools", 5*time.Second, func(ctx context.Context) error {
		body, err := e.adminGet(ctx, "/pools")
		if err == nil && !json.Valid(body) {
			err = fmt.Errorf("not JSON: %s", body)
		}
		return err
	})
	bounded("GET /healthz", 5*time.Second, func(ctx context.Context) error {
		_, err := e.adminGet(ctx, "/healthz")
		return err
	})
	bounded("a new client", 5*time.Second, func(ctx context.Context) error { return loginAndQuery(ctx, e.url()) })
	bounded("shutdown", 15*time.Second, func(ctx context.Context) error {
		done := make(chan struct{})
		go func() { e.close(); close(done) }()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the proxy did not shut down: %w", ctx.Err())
		}
	})
}

// TestHalfSentMessageHoldsNoServerConnection has a client send part of a
// small message and stop. The only server connection stays free for
// others: a logged-in client's statements and a new client's login and
// statement run at once, far within the 60s borrow_timeout.
//
// Nothing tells when Sluice has read the partial message; but each of the
// other client's 50 statements is a round trip through Sluice, and Sluice
// reads the bytes a client sent long before that many round trips end.
func TestHalfSentMessageHoldsNoServerConnection(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 1\n  borrow_timeout = \"60s\""})
	query := queryMessage("SELECT 1")
	longQuery := queryMessage("SELECT 1 /* " + strings.Repeat("x", 1000) + " */")
	parse, err := (&pgproto3.Parse{Name: "half", Query: "SELECT $1::int"}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		sent int
	}{
		{"part of the header of a Query", query, 3},
		{"half of a small Query", query, len(query) / 2},
		{"half of a 1 KB Query", longQuery, len(longQuery) / 2},
		{"half of a Parse", parse, len(parse) / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			b := e.connect(t)
			a := e.rawClient(ctx, t)
			defer a.Close()
			if _, err := a.Write(msg[:tc.sent]); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				var n int
				if err := b.QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
					t.Fatalf("statement %d of another client after %d of %d bytes of a message: %d, %v", i, tc.sent, len(msg), n, err)
				}
			}
			if err := loginAndQuery(ctx, e.url()); err != nil {
				t.Fatalf("a new client after %d of %d bytes of a message: %v", tc.sent, len(msg), err)
			}
		})
	}
}

// TestClientPreparedStatementLimit prepares more protocol-level named
// statements than pinning.max_client_prepared_statements allows: the one
// beyond the limit fails with SQLSTATE 53400, the session goes on, its
// statements still run, closing one makes room, and the limit is per
// client. (PostgreSQL itself has no such limit.)
func TestClientPreparedStatementLimit(t *testing.T) {
	const limit = 50
	e := newEnv(t, envOptions{pinning: fmt.Sprintf("max_client_prepared_statements = %d", limit)})
	ctx := context.Background()
	c := e.connect(t).PgConn()
	prepare := func(c *pgconn.PgConn, k int) error {
		_, err := c.Prepare(ctx, fmt.Sprintf("s%d", k), fmt.Sprintf("SELECT $1::int + %d", k), nil)
		return err
	}
	execute := func(k int) error {
		r := c.ExecPrepared(ctx, fmt.Sprintf("s%d", k), [][]byte{[]byte("1000")}, nil, nil).Read()
		if r.Err != nil {
			return r.Err
		}
		if len(r.Rows) != 1 || string(r.Rows[0][0]) != fmt.Sprint(1000+k) {
			return fmt.Errorf("s%d returned %q", k, r.Rows)
		}
		return nil
	}
	for k := 1; k <= limit; k++ {
		if err := prepare(c, k); err != nil {
			t.Fatalf("preparing s%d of at most %d: %v", k, limit, err)
		}
	}
	if err := prepare(c, limit+1); sqlstate(err) != "53400" {
		t.Fatalf("preparing s%d beyond the limit of %d: %v, want SQLSTATE 53400", limit+1, limit, err)
	}
	if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Fatalf("a statement after the refused Parse: %v", err)
	}
	if err := execute(1); err != nil {
		t.Fatalf("s1 after the refused Parse: %v", err)
	}
	if err := c.Deallocate(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	if err := prepare(c, limit+1); err != nil {
		t.Fatalf("preparing s%d after closing s2: %v", limit+1, err)
	}
	if err := execute(limit + 1); err != nil {
		t.Fatal(err)
	}
	other := e.connect(t).PgConn()
	for k := 1; k <= limit; k++ {
		if err := prepare(other, k); err != nil {
			t.Fatalf("another client preparing s%d: %v", k, err)
		}
	}
}

// TestIdleInTransactionTimeout leaves a client idle inside a transaction
// on the only server connection, with pool.idle_in_transaction_timeout
// 1s: another client's statement runs once the connection is freed, and
// the idle client gets PostgreSQL's own error for the same situation
// (idle_in_transaction_session_timeout). A client idle outside a
// transaction is not affected.
func TestIdleInTransactionTimeout(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 1\n  borrow_timeout = \"60s\"\n  idle_in_transaction_timeout = \"1s\""})
	ctx := context.Background()
	su := e.superuser(t)

	d := e.direct(t, pgx.QueryExecModeExec)
	execAll(t, d, "SET idle_in_transaction_session_timeout = '1s'", "BEGIN", "SELECT 1")
	awaitBackends(t, su, 10*time.Second, 0, "pid = $1", d.PgConn().PID())
	_, err := d.Exec(ctx, "SELECT 1")
	want := sqlstate(err)
	if want != "25P03" {
		t.Fatalf("PostgreSQL itself: %v, want SQLSTATE 25P03", err)
	}

	idle := e.connect(t)
	execAll(t, idle, "SELECT 1")
	idleSince := time.Now()
	b := e.connect(t)
	a := e.connect(t)
	execAll(t, a, "BEGIN", "SELECT 1")

	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := b.Exec(bctx, "SELECT 1"); err != nil {
		t.Fatalf("another client while one is idle in a transaction on the only server connection: %v", err)
	}
	t.Logf("the other client's statement ran after %s", time.Since(start).Round(time.Millisecond))
	actx, cancelA := context.WithTimeout(ctx, 5*time.Second)
	defer cancelA()
	if _, err := a.Exec(actx, "SELECT 1"); sqlstate(err) != want {
		t.Errorf("the client idle in a transaction past the timeout: %v, want SQLSTATE %s as from PostgreSQL", err, want)
	}

	// Idle for 3s outside a transaction: idleness is what is under test.
	time.Sleep(time.Until(idleSince.Add(3 * time.Second)))
	ictx, cancelI := context.WithTimeout(ctx, 5*time.Second)
	defer cancelI()
	if _, err := idle.Exec(ictx, "SELECT 1"); err != nil {
		t.Errorf("a client idle for 3s outside a transaction: %v", err)
	}
}

// TestQueryTimeout runs pg_sleep(30) with pool.query_timeout 1s: it fails
// with the SQLSTATE PostgreSQL gives for its own statement_timeout, long
// before 30s, the connection stays usable and the statement no longer
// runs on the server. Without query_timeout a 2s statement succeeds.
func TestQueryTimeout(t *testing.T) {
	t.Run("1s", func(t *testing.T) {
		e := newEnv(t, envOptions{pool: `query_timeout = "1s"`})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		su := e.superuser(t)

		d := e.direct(t, pgx.QueryExecModeExec)
		execAll(t, d, "SET statement_timeout = '1s'")
		_, err := d.Exec(ctx, "SELECT pg_sleep(30)")
		want := sqlstate(err)
		if want != "57014" {
			t.Fatalf("PostgreSQL itself: %v, want SQLSTATE 57014", err)
		}

		c := e.connect(t)
		start := time.Now()
		_, err = c.Exec(ctx, "SELECT pg_sleep(30) /* query-timeout-probe */")
		took := time.Since(start)
		if sqlstate(err) != want {
			t.Fatalf("pg_sleep(30) with query_timeout 1s: %v after %s, want SQLSTATE %s", err, took, want)
		}
		if took > 5*time.Second {
			t.Errorf("pg_sleep(30) with query_timeout 1s ended after %s", took)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
			t.Fatalf("the connection after the timeout: %d, %v", n, err)
		}
		awaitBackends(t, su, 5*time.Second, 0, "state = 'active' AND query LIKE '%query-timeout-probe%'")
	})
	t.Run("off by default", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := e.connect(t).Exec(ctx, "SELECT pg_sleep(2)"); err != nil {
			t.Fatalf("pg_sleep(2) without query_timeout: %v", err)
		}
	})
}

// heapInUse returns the bytes of heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}
