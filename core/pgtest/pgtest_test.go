package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicedb/sluice/core/pgtest"
)

// testContext returns a context that ends with the test or after a minute.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a connection closed when the test ends.
func connect(t *testing.T, ctx context.Context, connString string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connecting to %s: %v", redact(connString), err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func redact(connString string) string {
	if i := strings.Index(connString, "@"); i >= 0 {
		return "postgres://…" + connString[i:]
	}
	return connString
}

// sqlState returns the SQLSTATE of err, or "" if it carries none.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func queryString(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartServesPasswordAuthenticatedTCP(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"max_connections": "200"}})

	if got, want := srv.Addr(), net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port())); got != want {
		t.Errorf("Addr() = %q, want %q", got, want)
	}
	super := connect(t, ctx, srv.ConnString("postgres", "postgres", "postgres"))
	if got := queryString(t, ctx, super, "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"); !strings.HasPrefix(got, "SCRAM-SHA-256$") {
		t.Errorf("superuser password stored as %.10q…, want a SCRAM verifier", got)
	}
	if got := queryString(t, ctx, super, "SHOW max_connections"); got != "200" {
		t.Errorf("max_connections = %s, want 200 from Options.Settings", got)
	}
	if got := queryString(t, ctx, super, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %s, want off", got)
	}

	_, err := pgx.Connect(ctx, srv.ConnString("postgres", "wrong", "postgres"))
	if code := sqlState(err); code != "28P01" {
		t.Errorf("connecting with a wrong password: err = %v, want SQLSTATE 28P01", err)
	}

	// Names and password that need quoting in SQL and escaping in the URL.
	const role, password, db = "app user@x", `p@ss:w/rd'?#%\`, "app db/1"
	if err := srv.CreateRole(ctx, role, password); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateDatabase(ctx, db, role); err != nil {
		t.Fatal(err)
	}
	app := connect(t, ctx, srv.ConnString(role, password, db))
	var user, database, owner string
	err = app.QueryRow(ctx, `SELECT current_user, current_database(),
		(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())`).Scan(&user, &database, &owner)
	if err != nil {
		t.Fatal(err)
	}
	if user != role || database != db || owner != role {
		t.Errorf("connected as %q to %q owned by %q, want %q to %q owned by it", user, database, owner, role, db)
	}
	if err := srv.Exec(ctx, "CREATE TABLE public.t (v text); INSERT INTO public.t VALUES ('x')"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "INSERT INTO public.t VALUES ($1)", "y"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, super, "SELECT string_agg(v, ',' ORDER BY v) FROM public.t"); got != "x,y" {
		t.Errorf("rows written through Exec = %q, want \"x,y\"", got)
	}
	if err := srv.Exec(ctx, "SELECT no_such_column"); sqlState(err) != "42703" {
		t.Errorf("Exec of a bad statement: err = %v, want SQLSTATE 42703", err)
	}
	if tail := srv.LogTail(20); !strings.Contains(tail, "ready to accept connections") {
		t.Errorf("LogTail(20) = %q, want the startup message", tail)
	}
}

func TestAuthMethods(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method          string
		storedPrefix    string
		wrongPwdRefused bool
	}{
		{method: pgtest.AuthMD5, storedPrefix: "md5", wrongPwdRefused: true},
		{method: pgtest.AuthPassword, storedPrefix: "SCRAM-SHA-256$", wrongPwdRefused: true},
		{method: pgtest.AuthTrust, storedPrefix: "SCRAM-SHA-256$", wrongPwdRefused: false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			srv := pgtest.Start(t, pgtest.Options{AuthMethod: tc.method, SuperuserPassword: "root pw"})
			if err := srv.CreateRole(ctx, "app", "secret"); err != nil {
				t.Fatal(err)
			}
			super := connect(t, ctx, srv.ConnString("postgres", "root pw", "postgres"))
			rows, err := super.Query(ctx, "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('postgres', 'app')")
			if err != nil {
				t.Fatal(err)
			}
			stored, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Name, Password string }])
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != 2 {
				t.Fatalf("found %d of the roles postgres and app", len(stored))
			}
			for _, r := range stored {
				if !strings.HasPrefix(r.Password, tc.storedPrefix) {
					t.Errorf("password of %s stored as %.10q…, want prefix %q", r.Name, r.Password, tc.storedPrefix)
				}
			}
			connect(t, ctx, srv.ConnString("app", "secret", "postgres"))
			conn, err := pgx.Connect(ctx, srv.ConnString("app", "wrong", "postgres"))
			if tc.wrongPwdRefused {
				if sqlState(err) != "28P01" {
					t.Errorf("wrong password: err = %v, want SQLSTATE 28P01", err)
				}
			} else if err != nil {
				t.Errorf("wrong password with trust: %v, want success", err)
			}
			if conn != nil {
				_ = conn.Close(ctx)
			}
		})
	}
}

func TestReplicaFollowsPrimaryAndPromotes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	primary := pgtest.Start(t, pgtest.Options{})
	start := time.Now()
	replica := primary.AddReplica(t)
	t.Logf("AddReplica took %v", time.Since(start))
	if replica.Port() == primary.Port() || replica.DataDir() == primary.DataDir() {
		t.Fatalf("replica shares port or data directory with the primary")
	}

	if err := primary.Exec(ctx, "CREATE TABLE replicated (id int); INSERT INTO replicated VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, ctx, replica.ConnString("postgres", "postgres", "postgres"))
	if got := queryString(t, ctx, conn, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("replica pg_is_in_recovery() = %s, want true", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM replicated").Scan(&n)
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("table created on the primary not on the replica after 30s: rows %d, err %v", n, err)
		}
		// Wait for the replica to replay more WAL rather than sleep blindly.
		if _, err := conn.Exec(ctx, "SELECT pg_sleep(0.01)"); err != nil {
			t.Fatal(err)
		}
	}

	_, err := conn.Exec(ctx, "INSERT INTO replicated VALUES (2)")
	if sqlState(err) != "25006" {
		t.Fatalf("write on the replica: err = %v, want SQLSTATE 25006 (read_only_sql_transaction)", err)
	}

	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO replicated VALUES (2)"); err != nil {
		t.Fatalf("write on the promoted replica: %v", err)
	}
	if got := queryString(t, ctx, conn, "SELECT string_agg(id::text, ',' ORDER BY id) FROM replicated"); got != "1,2" {
		t.Errorf("rows on the promoted replica = %q, want \"1,2\"", got)
	}
}

func TestStopIsIdempotentAndRemovesTempDir(t *testing.T) {
	t.Parallel()
	start := time.Now()
	srv, err := pgtest.StartServer(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartServer took %v", time.Since(start))
	dataDir, socketDir := srv.DataDir(), srv.SocketDir()
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("data directory not initialised: %v", err)
	}
	start = time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatalf("first Stop: %v", err)
	}
	t.Logf("Stop took %v", time.Since(start))
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for _, dir := range []string{dataDir, socketDir} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Stop (stat err %v)", dir, err)
		}
	}
	ctx := testContext(t)
	if conn, err := pgx.Connect(ctx, srv.ConnString("postgres", "postgres", "postgres")); err == nil {
		_ = conn.Close(ctx)
		t.Errorf("connected to %s after Stop", srv.Addr())
	}
}

func TestConcurrentStopIsSafe(t *testing.T) {
	t.Parallel()
	srv, err := pgtest.StartServer(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = srv.Stop() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestDataDirIsReusedAndKept(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Not t.TempDir: when this runs as root, PostgreSQL runs as another user,
	// which must be able to reach the directory.
	parent, err := os.MkdirTemp("", "pgtest-datadir")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(parent, "pg")

	first, err := pgtest.StartServer(pgtest.Options{DataDir: dataDir, SuperuserPassword: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("data directory not kept after Stop: %v", err)
	}

	second := pgtest.Start(t, pgtest.Options{DataDir: dataDir, SuperuserPassword: "second"})
	conn := connect(t, ctx, second.ConnString("postgres", "second", "postgres"))
	if got := queryString(t, ctx, conn, "SELECT v::text FROM kept"); got != "42" {
		t.Errorf("row written by the first server = %s, want 42", got)
	}
	if got := queryString(t, ctx, conn, "SHOW data_directory"); got != dataDir {
		t.Errorf("data_directory = %s, want %s", got, dataDir)
	}
}

// A replica in a kept data directory is reused as it is on the next start,
// catches up with what the primary wrote meanwhile, and is refused once
// the primary's cluster has been recreated.
func TestReplicaDataDirIsReused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	parent, err := os.MkdirTemp("", "pgtest-replicadir")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	primaryDir, replicaDir := filepath.Join(parent, "primary"), filepath.Join(parent, "replica")
	primary, err := pgtest.StartServer(pgtest.Options{DataDir: primaryDir})
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Stop()
	first, err := primary.StartReplicaAt(replicaDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.DataDir(); got != replicaDir {
		t.Errorf("replica DataDir() = %s, want %s", got, replicaDir)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(ctx, "CREATE TABLE written_while_down (v int); INSERT INTO written_while_down VALUES (7)"); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	second, err := primary.StartReplicaAt(replicaDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restarting the kept replica took %v", time.Since(start))
	defer second.Stop()
	conn := connect(t, ctx, second.ConnString("postgres", "postgres", "postgres"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v int
		err := conn.QueryRow(ctx, "SELECT v FROM written_while_down").Scan(&v)
		if err == nil && v == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a row written while the replica was down is not on it after 30s: %d, %v", v, err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_sleep(0.01)"); err != nil {
			t.Fatal(err)
		}
	}
	if got := queryString(t, ctx, conn, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Errorf("reused replica pg_is_in_recovery() = %s, want true", got)
	}
	_ = conn.Close(ctx)
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}

	// Another cluster in the primary's place: the kept replica is refused,
	// not left retrying to stream.
	other := pgtest.Start(t, pgtest.Options{})
	if r, err := other.StartReplicaAt(replicaDir, 0); err == nil {
		_ = r.Stop()
		t.Fatal("a replica of another cluster was started as a replica of this one")
	} else if !strings.Contains(err.Error(), "standby of another cluster") {
		t.Errorf("error = %v, want it to say the replica belongs to another cluster", err)
	}
}

func TestFixedPortInUseFails(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	srv, err := pgtest.StartServer(pgtest.Options{Port: port})
	if err == nil {
		_ = srv.Stop()
		t.Fatalf("started on port %d, which is in use", port)
	}
	if !strings.Contains(err.Error(), "could not bind") {
		t.Errorf("error does not include the server log explaining the failure: %v", err)
	}
}

func TestBadSettingFailsWithServerLog(t *testing.T) {
	t.Parallel()
	srv, err := pgtest.StartServer(pgtest.Options{Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil {
		_ = srv.Stop()
		t.Fatal("started with shared_buffers = 'lots'")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error does not include the server log explaining the failure: %v", err)
	}
}

func TestInvalidOptionsAreRejected(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]pgtest.Options{
		"auth method":       {AuthMethod: "ident"},
		"setting name":      {Settings: map[string]string{"max_connections = 1\nfsync": "on"}},
		"port":              {Port: 70000},
		"password":          {SuperuserPassword: "a\nb"},
		"tls without a key": {TLS: &pgtest.TLS{CertPEM: []byte("x")}},
		"tls not pem":       {TLS: &pgtest.TLS{CertPEM: []byte("cert"), KeyPEM: []byte("key")}},
	} {
		srv, err := pgtest.StartServer(opts)
		if err == nil {
			_ = srv.Stop()
			t.Errorf("%s: StartServer(%+v) succeeded, want an error", name, opts)
		}
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the calling goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestRequireBinariesFailsWithoutBinaries(t *testing.T) {
	t.Setenv(pgtest.BinDirEnv, t.TempDir())
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pgtest.RequireBinaries(rec)
	}()
	<-done
	if !strings.Contains(rec.msg, "PostgreSQL 15 binaries not found; run `make deps`") {
		t.Errorf("RequireBinaries failed with %q, want the install hint", rec.msg)
	}
	if _, err := pgtest.StartServer(pgtest.Options{}); !errors.Is(err, pgtest.ErrBinariesNotFound) {
		t.Errorf("StartServer without binaries: err = %v, want ErrBinariesNotFound", err)
	}
}

func TestRequireBinariesPasses(t *testing.T) {
	pgtest.RequireBinaries(t)
}
