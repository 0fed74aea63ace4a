package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/sdk/filtertest"
)

// Filters under test, built once per test binary (and cached on disk).
const (
	readwriteDir = "../../examples/filters/readwrite"
	kitchenDir   = "../../filters/testdata/kitchen"
)

// filterBlock is a filter block for module with more lines inside.
func filterBlock(name, module, more string) string {
	return fmt.Sprintf("filter %q {\n  module = %q\n  %s\n}\n", name, module, more)
}

// onReplica asks the server that answers whether it is a standby.
func onReplica(t *testing.T, c *pgx.Conn, sql string) bool {
	t.Helper()
	var standby bool
	if err := c.QueryRow(context.Background(), sql).Scan(&standby); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return standby
}

// The readwrite example end to end, against a real streaming replica:
// reads land on the replica and writes on the writer, as the server that
// answered says (pg_is_in_recovery()); the writer hint and transactions
// are honoured; the filter's calls are on /metrics.
func TestFilterReadWriteEndToEnd(t *testing.T) {
	mod := filtertest.Build(t, readwriteDir)
	e := newEnv(t, envOptions{replicas: 1, admin: adminOn, cluster: "read_your_writes = true\n  read_your_writes_wait = \"10s\"",
		filters: filterBlock("readwrite", mod, `timeout = "50ms"`)})
	c := e.connect(t)
	ctx := context.Background()
	if _, err := c.Exec(ctx, "CREATE TABLE rw (id int)"); err != nil {
		t.Fatal(err)
	}
	if !onReplica(t, c, "SELECT pg_is_in_recovery()") {
		t.Error("a read-only autocommit statement was answered by the writer")
	}
	if onReplica(t, c, "/* sluice:writer */ SELECT pg_is_in_recovery()") {
		t.Error("the writer hint was not honoured")
	}
	// Read your writes (the cluster has it on): the replica waits for the
	// insert before it answers.
	for i := range 20 {
		if _, err := c.Exec(ctx, "INSERT INTO rw VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
		var n int
		var standby bool
		if err := c.QueryRow(ctx, "SELECT count(*), pg_is_in_recovery() FROM rw").Scan(&n, &standby); err != nil {
			t.Fatal(err)
		}
		if n != i+1 || !standby {
			t.Fatalf("after insert %d: count %d on standby=%v, want %d on the replica", i, n, standby, i+1)
		}
	}
	tx, err := c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	var standby bool
	if err := tx.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil || !standby {
		t.Errorf("a READ ONLY transaction: standby=%v err=%v, want the replica", standby, err)
	}
	tx.Commit(ctx)
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil || standby {
		t.Errorf("a read-write transaction: standby=%v err=%v, want the writer", standby, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO rw VALUES (100)"); err != nil {
		t.Error(err)
	}
	tx.Commit(ctx)
	m := e.scrape(t)
	if n := m.value("sluice_filter_calls_total", "filter", "readwrite", "hook", "statement"); n < 25 {
		t.Errorf("sluice_filter_calls_total{statement} = %v, want at least 25", n)
	}
	if n := m.value("sluice_filter_errors_total", "filter", "readwrite"); n != 0 {
		t.Errorf("sluice_filter_errors_total = %v, want 0", n)
	}
	if n := m.value("sluice_filter_call_seconds", "filter", "readwrite", "hook", "statement"); n < 25 {
		t.Errorf("sluice_filter_call_seconds count = %v", n)
	}
	if n := m.value("sluice_filter_counter", "filter", "readwrite", "name", "replica"); n < 20 {
		t.Errorf("the filter's replica counter = %v, want at least 20", n)
	}
}

// A session-start rejection reaches the client as a FATAL with the
// filter's SQLSTATE, and a cluster chosen at session start serves the
// whole session; other sessions stay on the listener's cluster.
func TestFilterSessionStart(t *testing.T) {
	mod := filtertest.Build(t, kitchenDir)
	pg2 := startSecondServer(t)
	e := newEnv(t, envOptions{filters: filterBlock("kitchen", mod, `timeout = "50ms"`),
		extra: fmt.Sprintf("cluster \"other\" {\n  writer = %q\n}\n", pg2.Addr())})
	ctx := context.Background()
	for _, tc := range []struct {
		app  string
		port int
	}{{"cluster:other", pg2.Port()}, {"web", e.pg.Port()}} {
		c := e.connect(t, "application_name="+tc.app)
		if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS kt (a int)"); err != nil {
			t.Fatal(err)
		}
		for _, sql := range []string{"SELECT inet_server_port()", "INSERT INTO kt VALUES (1) RETURNING inet_server_port()"} {
			var port int
			if err := c.QueryRow(ctx, sql).Scan(&port); err != nil {
				t.Fatalf("%s: %s: %v", tc.app, sql, err)
			}
			if port != tc.port {
				t.Errorf("application_name %s: %q answered by port %d, want %d", tc.app, sql, port, tc.port)
			}
		}
	}
	cfg, err := pgx.ParseConfig(e.url("application_name=stranger"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = pgx.ConnectConfig(ctx, cfg)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || pe.Severity != "FATAL" || pe.Message != "kitchen does not know you" {
		t.Fatalf("a session the filter refuses: %v, want FATAL 28000 from the filter", err)
	}
}

// startSecondServer starts another PostgreSQL with the app role and
// database, for a second cluster.
func startSecondServer(t *testing.T) *pgtest.Server {
	t.Helper()
	pg := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := pg.CreateRole(ctx, appUser, backendPass); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateDatabase(ctx, "appdb", appUser); err != nil {
		t.Fatal(err)
	}
	return pg
}

// Faults in a filter behave as its failure policy says, within its
// timeout plus a margin, and the other sessions never notice.
func TestFilterFaultsDoNotDisturbOthers(t *testing.T) {
	mod := filtertest.Build(t, kitchenDir)
	const timeout = 30 * time.Millisecond
	for _, policy := range []string{config.FailClosed, config.FailSafe} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t, envOptions{replicas: 1, filters: filterBlock("kitchen", mod,
				fmt.Sprintf("timeout = %q\n  failure_policy = %q\n  instances = 4", timeout, policy))})
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var ok atomic.Int64
			errs := make(chan error, 10)
			for range 8 {
				c := e.connect(t)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						var n int
						if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&n); err != nil {
							errs <- err
							return
						}
						ok.Add(1)
					}
				}()
			}
			bad := e.connect(t)
			for _, sql := range []string{"loop", "alloc", "panic", "exit", "loop"} {
				start := time.Now()
				_, err := bad.Exec(context.Background(), sql)
				el := time.Since(start)
				var pe *pgconn.PgError
				if !errors.As(err, &pe) {
					t.Fatalf("%s: %v, want a PostgreSQL error", sql, err)
				}
				want := "58000" // fail_closed: the filter's failure
				if policy == config.FailSafe {
					want = "42601" // fail_safe: sent to the writer, which finds no such statement
				}
				if pe.Code != want {
					t.Errorf("%s: SQLSTATE %s (%s), want %s", sql, pe.Code, pe.Message, want)
				}
				if el > timeout+time.Second {
					t.Errorf("%s: answered after %v (timeout %v)", sql, el, timeout)
				}
				// The session goes on.
				var n int
				if err := bad.QueryRow(context.Background(), "SELECT 2").Scan(&n); err != nil || n != 2 {
					t.Fatalf("after %s: %v", sql, err)
				}
			}
			before := ok.Load()
			time.Sleep(200 * time.Millisecond)
			cancel()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("another session noticed: %v", err)
			}
			if ok.Load() == before {
				t.Error("the other sessions stopped getting answers")
			}
		})
	}
}

// Hot reload under load: 50 clients run transactions while the module is
// swapped 10 times, by SIGHUP's path (Reload) and by a change of its file,
// with no failed transaction; a broken module is refused and the old one
// keeps serving.
func TestFilterHotReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "routing.wasm")
	versions := []string{filtertest.Build(t, readwriteDir), filtertest.Build(t, kitchenDir)}
	install := func(src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(mod+".new", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(mod+".new", mod); err != nil {
			t.Fatal(err)
		}
	}
	install(versions[0])
	o := envOptions{replicas: 1, admin: adminOn, pool: "max_connections = 20",
		filters: filterBlock("routing", mod, `timeout = "100ms"`)}
	e := newEnv(t, o)
	ctx := context.Background()
	if _, err := e.connect(t).Exec(ctx, "CREATE TABLE hot (id bigint, client int)"); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var txs, failed atomic.Int64
	var firstErr atomic.Value
	for i := range 50 {
		c := e.connect(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO hot VALUES ($1, $2)", k, i); err != nil {
						return err
					}
					var n int
					return tx.QueryRow(ctx, "SELECT count(*) FROM hot WHERE client = $1", i).Scan(&n)
				})
				if err == nil {
					var one int
					err = c.QueryRow(ctx, "SELECT 1").Scan(&one)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				txs.Add(1)
			}
		}()
	}
	generation := func() float64 { return e.scrape(t).value("sluice_filter_generation") }
	gen := generation()
	cfg, err := config.Parse([]byte(e.cfg), engineEnviron())
	if err != nil {
		t.Fatal(err)
	}
	for swap := 1; swap <= 10; swap++ {
		before := txs.Load()
		install(versions[swap%2])
		if swap%2 == 0 { // SIGHUP's path; odd swaps are found by the file watcher
			if err := e.proxy.Reload(cfg); err != nil {
				t.Fatalf("swap %d: %v", swap, err)
			}
		}
		want := gen + float64(swap)
		e.await(t, fmt.Sprintf("generation %v", want), func(m metricSet) bool {
			return m.value("sluice_filter_generation") >= want
		})
		for txs.Load() < before+100 { // traffic runs on the new version
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A broken module is refused, by either path, and the old one serves.
	if err := os.WriteFile(mod+".new", []byte("\x00asm broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(mod+".new", mod); err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Reload(cfg); err == nil {
		t.Error("a reload with a broken module was accepted")
	}
	e.await(t, "a failed filter reload", func(m metricSet) bool {
		return m.value("sluice_filter_reloads_total", "filter", "routing", "result", "error") >= 2
	})
	before := txs.Load()
	for txs.Load() < before+100 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if g := generation(); g != gen+10 {
		t.Errorf("generation %v after 10 swaps and a refused one, want %v", g, gen+10)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d transactions failed during the swaps; first: %v", n, txs.Load()+n, firstErr.Load())
	}
	t.Logf("%d transactions over 10 swaps, none failed", txs.Load())
}

// The tenant example sends each session to its tenant's cluster, on two
// real PostgreSQL servers, and refuses unknown tenants at login.
func TestFilterTenantEndToEnd(t *testing.T) {
	mod := filtertest.Build(t, "../../examples/filters/tenant")
	pg2 := startSecondServer(t)
	e := newEnv(t, envOptions{
		filters: filterBlock("tenant", mod, `timeout = "50ms"
  config {
    by             = "application_name"
    separator      = "-"
    reject_unknown = true
    clusters {
      acme   = "main"
      globex = "globex"
    }
  }`),
		extra: fmt.Sprintf("cluster \"globex\" {\n  writer = %q\n}\n", pg2.Addr())})
	ctx := context.Background()
	for _, tc := range []struct {
		app  string
		port int
	}{{"acme-web", e.pg.Port()}, {"globex-batch", pg2.Port()}, {"globex", pg2.Port()}, {"acme", e.pg.Port()}} {
		c := e.connect(t, "application_name="+tc.app)
		for range 3 { // every transaction, each borrowing again
			var port int
			if err := c.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
				t.Fatalf("%s: %v", tc.app, err)
			}
			if port != tc.port {
				t.Errorf("application_name %s: served by port %d, want %d", tc.app, port, tc.port)
			}
		}
	}
	cfg, err := pgx.ParseConfig(e.url("application_name=initech"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = pgx.ConnectConfig(ctx, cfg)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || pe.Severity != "FATAL" {
		t.Fatalf("an unknown tenant: %v, want FATAL 28000", err)
	}
}

// A guard rejection reaches psql as an ordinary error with the filter's
// SQLSTATE; what the guard lets through reaches the server.
func TestFilterGuardThroughPsql(t *testing.T) {
	mod := filtertest.Build(t, "../../examples/filters/guard")
	e := newEnv(t, envOptions{filters: filterBlock("guard", mod, `timeout = "50ms"
  failure_policy = "fail_closed"
  config {
    ddl_users_denied = ["app"]
  }`)})
	psql := func(sql string) (string, error) {
		host, port, _ := strings.Cut(e.addr, ":")
		cmd := exec.Command("psql", "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=1",
			"-h", host, "-p", port, "-U", appUser, "-d", "appdb", "-c", sql)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+appPassword, "PGSSLMODE="+clientSSLMode(), "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct{ sql, want string }{
		{"DROP TABLE IF EXISTS t", "ERROR:  42501: "},
		{"DELETE FROM t", "ERROR:  21000: guard: DELETE requires a WHERE clause"},
		{"UPDATE t SET a = 1", "ERROR:  21000: guard: UPDATE requires a WHERE clause"},
		// Let through: the server answers (no such table).
		{"DELETE FROM t WHERE a = 1", "ERROR:  42P01: relation \"t\" does not exist"},
	} {
		out, err := psql(tc.sql)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("psql -c %q: %v\n%s\nwant %q", tc.sql, err, out, tc.want)
		}
	}
	if out, err := psql("SELECT 40 + 2"); err != nil || strings.TrimSpace(out) != "42" {
		t.Errorf("a plain SELECT: %v %q", err, out)
	}
}

// The pinpolicy example end to end: a call of a chosen function pins the
// session (the proxy reports the filter's reason and the client keeps its
// backend), and set_config of a reported parameter, which core alone
// pins, does not.
func TestFilterPinPolicyEndToEnd(t *testing.T) {
	mod := filtertest.Build(t, "../../examples/filters/pinpolicy")
	e := newEnv(t, envOptions{filters: filterBlock("pinpolicy", mod, `timeout = "50ms"
  config {
    never_pin_set    = ["application_name"]
    pin_on_functions = ["app_set_tenant"]
  }`)})
	ctx := context.Background()
	if _, err := e.connect(t).Exec(ctx, "CREATE FUNCTION app_set_tenant(t text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('app.tenant', t, false) $$"); err != nil {
		t.Fatal(err)
	}
	pinnedBy := func(reason string) bool {
		for _, s := range e.proxy.Sessions() {
			for _, r := range s.Pinned {
				if strings.Contains(r, reason) {
					return true
				}
			}
		}
		return false
	}
	// set_config of application_name: the filter says never pin.
	c := e.connect(t)
	if _, err := c.Exec(ctx, "SELECT set_config('application_name', 'reports', false)"); err != nil {
		t.Fatal(err)
	}
	if pinnedBy("set_config") {
		t.Errorf("set_config('application_name', ...) pinned the session: %+v", e.proxy.Sessions())
	}
	var app string
	if err := c.QueryRow(ctx, "SHOW application_name").Scan(&app); err != nil || app != "reports" {
		t.Errorf("application_name after set_config: %q %v, want it carried over", app, err)
	}
	// The same for a parameter the filter does not list: core pins.
	if _, err := c.Exec(ctx, "SELECT set_config('search_path', 'public', false)"); err != nil {
		t.Fatal(err)
	}
	if !pinnedBy("set_config") {
		t.Errorf("set_config('search_path', ...) did not pin: %+v", e.proxy.Sessions())
	}
	// A call of a chosen function pins with the filter's reason.
	d := e.connect(t)
	if _, err := d.Exec(ctx, "SELECT app_set_tenant('acme')"); err != nil {
		t.Fatal(err)
	}
	if !pinnedBy("app_set_tenant") {
		t.Fatalf("no session pinned by app_set_tenant: %+v", e.proxy.Sessions())
	}
	var tenant string
	for range 5 { // the pinned session keeps the backend that holds its state
		if err := d.QueryRow(ctx, "SELECT current_setting('app.tenant')").Scan(&tenant); err != nil || tenant != "acme" {
			t.Fatalf("the pinned session lost its state: %q %v", tenant, err)
		}
	}
}

// A filter's statement hook runs off the event loop (issue 9): while one
// client's call spins to its deadline, another client of the same, only,
// loop gets its answers, and a client that leaves while its call is out
// ends once the call returns, its session gone from the list.
func TestFilterCallOffTheLoop(t *testing.T) {
	mod := filtertest.Build(t, kitchenDir)
	const timeout = time.Second // a "loop" call is killed at KillAfter(timeout)
	e := newEnv(t, envOptions{loops: 1, filters: filterBlock("kitchen", mod,
		fmt.Sprintf("timeout = %q\n  failure_policy = %q\n  instances = 4", timeout, config.FailClosed))})
	ctx := context.Background()
	slow, other := e.connect(t), e.connect(t)

	// A client that sends a spinning statement and leaves at once.
	leaver := e.connect(t)
	hj, err := leaver.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hj.Conn.Write([]byte("Q\x00\x00\x00\x09loop\x00")); err != nil {
		t.Fatal(err)
	}
	hj.Conn.Close()

	start := time.Now()
	slowDone := make(chan time.Time, 1)
	go func() {
		_, err := slow.Exec(ctx, "loop")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "58000" {
			t.Errorf("the spinning statement: %v, want SQLSTATE 58000 (fail_closed)", err)
		}
		slowDone <- time.Now()
	}()
	var answers []time.Time
	var end time.Time
	for end.IsZero() {
		var n int
		if err := other.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("the other client: %v", err)
		}
		answers = append(answers, time.Now())
		select {
		case end = <-slowDone:
		default:
		}
	}
	// The call ran for most of a second; in its middle (from 300 ms after
	// it was sent to 100 ms before its answer) the other client was
	// answered. On the loop, the call would have held every answer back.
	if end.Sub(start) < 500*time.Millisecond {
		t.Fatalf("the spinning statement was answered after %v: it did not run to its deadline", end.Sub(start))
	}
	var during int
	for _, a := range answers {
		if a.After(start.Add(300*time.Millisecond)) && a.Before(end.Add(-100*time.Millisecond)) {
			during++
		}
	}
	if during == 0 {
		t.Fatalf("no answer for the other client while the call was out (%d answers in %v)", len(answers), end.Sub(start))
	}
	t.Logf("%d answers to the other client in %v, %d of them in the middle of the call", len(answers), end.Sub(start), during)

	// The leaver's session ended once its call returned.
	deadline := time.Now().Add(10 * time.Second)
	for len(e.proxy.Sessions()) > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions listed, want 2: the leaver's stayed", len(e.proxy.Sessions()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var n int
	if err := slow.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after its refused statement: %v", err)
	}
}

// Pipelined statements of a filtered session on the loop: a batch of 40
// distinct statements sent in one write, in a transaction and in
// autocommit, each Parse asking the filter (off the loop) while what went
// before it is on its way; every statement's answer comes back in order.
func TestFilterPipelinedOnLoop(t *testing.T) {
	mod := filtertest.Build(t, kitchenDir)
	e := newEnv(t, envOptions{loops: 1, admin: adminOn, filters: filterBlock("kitchen", mod, `timeout = "1s"`)})
	ctx := context.Background()
	c := e.connect(t)
	run := func(what string, q interface {
		SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
	}) {
		t.Helper()
		b := &pgx.Batch{}
		for i := range 40 {
			b.Queue(fmt.Sprintf("SELECT $1::int + %d", i), i)
		}
		br := q.SendBatch(ctx, b)
		for i := range 40 {
			var n int
			if err := br.QueryRow().Scan(&n); err != nil || n != 2*i {
				t.Fatalf("%s: statement %d: %d, %v; want %d", what, i, n, err, 2*i)
			}
		}
		if err := br.Close(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	run("autocommit", c)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	run("in a transaction", tx)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.scrape(t).value("sluice_filter_calls_total", "filter", "kitchen", "hook", "statement"); n < 80 {
		t.Errorf("sluice_filter_calls_total{statement} = %v, want at least 80", n)
	}
}
