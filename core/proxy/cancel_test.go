package proxy_test

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// waitForQuery waits until PostgreSQL shows a statement containing text as active.
func waitForQuery(t *testing.T, su *pgx.Conn, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := su.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", text).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("statement %q never became active", text)
}

func TestCancelWithPgx(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	cfg, err := pgx.ParseConfig(e.url())
	if err != nil {
		t.Fatal(err)
	}
	// Only a CancelRequest may end the query: pgx must not fall back to
	// closing its connection within the test's time.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 20 * time.Second}
	}
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	cancelSleep(t, e, c, "pgx-cancel")
	var n int
	if err := c.QueryRow(context.Background(), "SELECT 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("connection unusable after cancel: %d, %v", n, err)
	}
}

// cancelSleep runs pg_sleep(30), tagged with tag, on c, cancels it through
// pgx's context once the server runs it, and checks that it ends promptly
// with 57014.
func cancelSleep(t *testing.T, e *testEnv, c *pgx.Conn, tag string) {
	t.Helper()
	su := e.superuser(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(30) /* "+tag+" */")
		errc <- err
	}()
	waitForQuery(t, su, tag)
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if code := sqlstate(err); code != "57014" {
			t.Fatalf("pg_sleep(30) ended with %v, want SQLSTATE 57014", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("cancel took %s, want under 1s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("query not cancelled within 5s")
	}
}

func TestCancelWithPsql(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	su := e.superuser(t)
	host, port, _ := strings.Cut(e.addr, ":")
	cmd := exec.Command("psql", "-X", "-h", host, "-p", port, "-U", appUser, "-d", "appdb", "-c", "SELECT pg_sleep(30) /* psql-cancel */")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+appPassword, "PGSSLMODE="+clientSSLMode())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForQuery(t, su, "psql-cancel")
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT) // psql sends a CancelRequest on SIGINT
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		if d := time.Since(start); d > time.Second {
			t.Errorf("cancel took %s, want under 1s", d)
		}
		if !strings.Contains(out.String(), "canceling statement due to user request") {
			t.Errorf("psql output does not show the cancel:\n%s", out.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("psql query not cancelled within 5s")
	}
}

func TestRandomCancelKeyCancelsNothing(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	c := e.connect(t)
	su := e.superuser(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "SELECT pg_sleep(1.5) /* victim */")
		errc <- err
	}()
	waitForQuery(t, su, "victim")
	pid := c.PgConn().PID()
	key := binary.BigEndian.Uint32(c.PgConn().SecretKey())
	for _, k := range [][2]uint32{{pid, key + 1}, {pid + 1, key}, {12345, 67890}} {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 16)
		binary.BigEndian.PutUint32(b, 16)
		binary.BigEndian.PutUint32(b[4:], 80877102)
		binary.BigEndian.PutUint32(b[8:], k[0])
		binary.BigEndian.PutUint32(b[12:], k[1])
		conn.Write(b)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var buf [1]byte
		if n, _ := conn.Read(buf[:]); n != 0 {
			t.Errorf("cancel with a wrong key got a reply")
		}
		conn.Close()
	}
	if err := <-errc; err != nil {
		t.Fatalf("a wrong cancel key cancelled the query: %v", err)
	}
}
