package proxy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgbench runs the pgbench binary against Sluice and returns its output.
func (e *testEnv) pgbench(t *testing.T, args ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(e.addr, ":")
	cmd := exec.Command("pgbench", append([]string{"-h", host, "-p", port, "-U", appUser}, append(args, "appdb")...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+appPassword, "PGSSLMODE="+clientSSLMode())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// watchServerConns polls PostgreSQL for the number of connections of role
// app until stop is closed and returns the largest number seen.
func (e *testEnv) watchServerConns(t *testing.T, stop <-chan struct{}) <-chan int {
	su := e.superuser(t)
	out := make(chan int, 1)
	go func() {
		peak := 0
		for {
			var n int
			if err := su.QueryRow(context.Background(),
				"SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = 'app'").Scan(&n); err == nil && n > peak {
				peak = n
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return out
}

func TestPgbenchThroughFiveServerConnections(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 5"})
	e.pgbench(t, "-i", "-s", "2", "-q")
	for _, mode := range []string{"simple", "extended"} {
		t.Run(mode, func(t *testing.T) {
			stop := make(chan struct{})
			peak := e.watchServerConns(t, stop)
			out := e.pgbench(t, "-c", "50", "-j", "2", "-T", "10", "-M", mode, "-n")
			close(stop)
			if p := <-peak; p > 5 {
				t.Errorf("PostgreSQL saw %d connections from sluice, want at most 5", p)
			}
			m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
			if m == nil || m[1] == "0" {
				t.Fatalf("no transactions processed:\n%s", out)
			}
			if f := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out); f != nil && f[1] != "0" {
				t.Errorf("%s failed transactions:\n%s", f[1], out)
			}
			t.Logf("pgbench -M %s: %s transactions", mode, m[1])
		})
	}
}

func TestThousandClientsThroughTenServerConnections(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 10", auth: "md5"})
	ctx := context.Background()
	setup := e.connect(t)
	if _, err := setup.Exec(ctx, "CREATE TABLE counters (client int PRIMARY KEY, n int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	peak := e.watchServerConns(t, stop)
	const clients, txs = 1000, 20
	var failed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			cfg, err := pgx.ParseConfig(e.url())
			if err != nil {
				errs <- err
				return
			}
			cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
			cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			c, err := pgx.ConnectConfig(cctx, cfg)
			if err != nil {
				failed.Add(1)
				errs <- fmt.Errorf("client %d connect: %w", id, err)
				return
			}
			defer c.Close(ctx)
			for j := 0; j < txs; j++ {
				err := pgx.BeginFunc(cctx, c, func(tx pgx.Tx) error {
					_, err := tx.Exec(cctx, "INSERT INTO counters VALUES ($1, 1) ON CONFLICT (client) DO UPDATE SET n = counters.n + 1", id)
					return err
				})
				if err != nil {
					failed.Add(1)
					errs <- fmt.Errorf("client %d tx %d: %w", id, j, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var rows, total int
	if err := setup.QueryRow(ctx, "SELECT count(*), coalesce(sum(n), 0) FROM counters").Scan(&rows, &total); err != nil {
		t.Fatal(err)
	}
	if rows != clients || total != clients*txs {
		t.Errorf("counters: %d rows, sum %d; want %d rows, sum %d", rows, total, clients, clients*txs)
	}
	if p := <-peak; p > 10 {
		t.Errorf("PostgreSQL saw %d connections from sluice, want at most 10", p)
	}
}

func TestStartupParametersAreIsolated(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	ctx := context.Background()
	admin := e.connect(t)
	for _, s := range []string{"s0", "s1", "s2", "s3"} {
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+s); err != nil {
			t.Fatal(err)
		}
	}
	zones := []string{"UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris"}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			app, zone, path := fmt.Sprintf("client-%d", i), zones[i%4], fmt.Sprintf("s%d", i%4)
			cfg, err := pgx.ParseConfig(e.url())
			if err != nil {
				t.Error(err)
				return
			}
			cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
			cfg.RuntimeParams["application_name"] = app
			cfg.RuntimeParams["TimeZone"] = zone
			cfg.RuntimeParams["search_path"] = path
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(ctx)
			if got := c.PgConn().ParameterStatus("application_name"); got != app {
				t.Errorf("client %d: ParameterStatus application_name = %q, want %q", i, got, app)
			}
			if got := c.PgConn().ParameterStatus("TimeZone"); got != zone {
				t.Errorf("client %d: ParameterStatus TimeZone = %q, want %q", i, got, zone)
			}
			for j := 0; j < 50; j++ {
				var gotApp, gotZone, gotPath string
				if err := c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('TimeZone'), current_setting('search_path')").
					Scan(&gotApp, &gotZone, &gotPath); err != nil {
					t.Error(err)
					return
				}
				if gotApp != app || gotZone != zone || gotPath != path {
					t.Errorf("client %d statement %d saw (%s, %s, %s), want (%s, %s, %s)", i, j, gotApp, gotZone, gotPath, app, zone, path)
					return
				}
			}
		}(i)
	}
	wg.Wait()

	// A client that sets nothing sees the server's defaults, not a previous client's values.
	plain := e.connect(t)
	var app, zone, path string
	if err := plain.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('TimeZone'), current_setting('search_path')").Scan(&app, &zone, &path); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(app, "client-") || path != `"$user", public` {
		t.Errorf("a client with default settings saw application_name %q, search_path %q", app, path)
	}
}

func TestBorrowTimeout(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 1\n borrow_timeout = \"1s\""})
	ctx := context.Background()
	holder := e.connect(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// The second client logs in at once: the login is answered from the
	// pool's cached server parameters, without a server connection.
	cfg, _ := pgx.ParseConfig(e.url())
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	second, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("login while the pool is exhausted: %v", err)
	}
	defer second.Close(ctx)
	// Its first statement waits for the connection, up to borrow_timeout.
	start := time.Now()
	_, err = second.Exec(ctx, "SELECT 1")
	waited := time.Since(start)
	if code := sqlstate(err); code != "53300" {
		t.Fatalf("second client: err %v (SQLSTATE %q), want 53300", err, code)
	}
	if waited < time.Second || waited > 5*time.Second {
		t.Errorf("borrow timeout after %s, want about 1s", waited)
	}
	if !strings.Contains(err.Error(), "waiting for a server connection") {
		t.Errorf("error does not explain the wait: %v", err)
	}

	// A client already logged in gets 53300 for its statement and keeps its session.
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	other := e.connect(t)
	tx2, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_, err = other.Exec(ctx, "SELECT 1")
	if code := sqlstate(err); code != "53300" {
		t.Fatalf("statement while the pool is exhausted: %v, want 53300", err)
	}
	tx2.Rollback(ctx)
	var n int
	if err := other.QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after the pool freed up: %d, %v", n, err)
	}
}

func TestSessionMode(t *testing.T) {
	e := newEnv(t, envOptions{pool: "mode = \"session\"\nmax_connections = 4"})
	e.pgbench(t, "-i", "-s", "1", "-q")
	for _, mode := range []string{"simple", "prepared"} {
		out := e.pgbench(t, "-c", "4", "-j", "2", "-T", "2", "-M", mode, "-n")
		if f := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out); f != nil && f[1] != "0" {
			t.Errorf("-M %s in session mode: %s failed transactions", mode, f[1])
		}
	}
	// A session keeps its server connection and its state between transactions.
	ctx := context.Background()
	c := e.connect(t)
	if _, err := c.Exec(ctx, "SET work_mem = '7MB'"); err != nil {
		t.Fatal(err)
	}
	var pid1, pid2 int
	var wm string
	c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1)
	other := e.connect(t)
	other.Exec(ctx, "SELECT 1")
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid(), current_setting('work_mem')").Scan(&pid2, &wm); err != nil {
		t.Fatal(err)
	}
	if pid1 != pid2 || wm != "7MB" {
		t.Errorf("session mode moved the client: backend %d then %d, work_mem %q", pid1, pid2, wm)
	}
}
