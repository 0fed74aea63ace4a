package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestDisconnectInsideTransactionLeavesNothing(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) { testDisconnectInsideTransaction(t, mode) })
	}
}

// testDisconnectInsideTransaction runs with unnamed statements (the client
// is multiplexed) and with named ones (it is pinned).
func testDisconnectInsideTransaction(t *testing.T, mode pgx.QueryExecMode) {
	e := newEnv(t, envOptions{pool: "max_connections = 1"})
	ctx := context.Background()
	setup := e.connect(t)
	if _, err := setup.Exec(ctx, "CREATE TABLE locked (id int PRIMARY KEY); INSERT INTO locked VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)

	cfg, err := pgx.ParseConfig(e.url())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT * FROM locked WHERE id = 1 FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	c.PgConn().Conn().Close() // vanish without ROLLBACK or Terminate

	// With one server connection, the next client gets the very connection
	// the first one left: it must be clean and the lock gone.
	next := e.connect(t)
	var lockedRow int
	err = next.QueryRow(ctx, "SELECT id FROM locked WHERE id = 1 FOR UPDATE NOWAIT").Scan(&lockedRow)
	if err != nil {
		t.Fatalf("the row lock survived the client that took it: %v", err)
	}
	// Outside a transaction block SAVEPOINT fails with 25P01; inside the
	// transaction the first client left open it would succeed.
	if _, err := next.Exec(ctx, "SAVEPOINT probe"); sqlstate(err) != "25P01" {
		t.Errorf("the next client is inside a transaction block (SAVEPOINT: %v)", err)
	}
	var idleInTx int
	if err := e.superuser(t).QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'").Scan(&idleInTx); err != nil {
		t.Fatal(err)
	}
	if idleInTx != 0 {
		t.Errorf("%d server connections are idle in transaction", idleInTx)
	}
}

func TestCopyIsByteIdenticalToDirect(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	ctx := context.Background()
	c := e.connect(t)
	if _, err := c.Exec(ctx, "CREATE TABLE copied (id int, name text, note text)"); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&in, "%d\tname-%d\tnote with tab\\tand \\\\ backslash %d\n", i, i, i*7)
	}
	want := in.Bytes()
	tag, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(want), "COPY copied FROM STDIN")
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 100000 {
		t.Fatalf("COPY FROM STDIN stored %d rows", tag.RowsAffected())
	}
	var through, direct bytes.Buffer
	if _, err := c.PgConn().CopyTo(ctx, &through, "COPY (SELECT * FROM copied ORDER BY id) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	dc, err := pgx.Connect(ctx, e.pg.ConnString(appUser, backendPass, "appdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	if _, err := dc.PgConn().CopyTo(ctx, &direct, "COPY (SELECT * FROM copied ORDER BY id) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(through.Bytes(), direct.Bytes()) {
		t.Fatalf("COPY TO STDOUT through sluice differs from direct (%d vs %d bytes)", through.Len(), direct.Len())
	}
	if !bytes.Equal(through.Bytes(), want) {
		t.Fatalf("COPY round trip changed the data (%d vs %d bytes)", through.Len(), len(want))
	}
	// A failed COPY leaves the session usable.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("not-a-number\tx\ty\n"), "COPY copied FROM STDIN")
	if code := sqlstate(err); code != "22P02" {
		t.Fatalf("bad COPY data: %v, want 22P02", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM copied").Scan(&n); err != nil || n != 100000 {
		t.Fatalf("after a failed COPY: %d rows, %v", n, err)
	}
}

func TestTerminatedServerConnection(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 3"})
	ctx := context.Background()
	su := e.superuser(t)
	victim := e.connect(t)
	others := []*pgx.Conn{e.connect(t), e.connect(t)}

	tx, err := victim.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := su.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	// The client sees what PostgreSQL said: the server's own FATAL, not a
	// proxy error on top of it.
	_, err = tx.Exec(ctx, "SELECT 1")
	if sqlstate(err) != "57P01" {
		t.Fatalf("the client whose server connection was terminated got %v, want SQLSTATE 57P01", err)
	}
	// In transaction mode the client outlives its server connection: the
	// server's FATAL reaches it as an ERROR, its transaction is failed
	// until ROLLBACK, and its next one runs on another connection.
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Severity != "ERROR" {
		t.Errorf("severity %q, want ERROR: the client's session goes on", pe.Severity)
	}
	if _, err := tx.Exec(ctx, "SELECT 2"); sqlstate(err) != "40001" {
		t.Errorf("a statement in the lost transaction: %v, want 40001", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("ROLLBACK of the lost transaction: %v", err)
	}
	var n int
	if err := victim.QueryRow(ctx, "SELECT 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("the victim's next statement: %d, %v", n, err)
	}
	// Every other client keeps working, also while reusing the pool.
	var wg sync.WaitGroup
	for i, c := range others {
		wg.Add(1)
		go func(i int, c *pgx.Conn) {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				var n int
				if err := c.QueryRow(ctx, "SELECT $1::int", j).Scan(&n); err != nil || n != j {
					t.Errorf("client %d statement %d: %d, %v", i, j, n, err)
					return
				}
			}
		}(i, c)
	}
	wg.Wait()
	// Terminating an idle pooled connection is noticed before anyone uses it.
	if _, err := su.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = 'app'"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the FATALs reach the idle sockets
	fresh := e.connect(t)
	for i, c := range append(others, fresh) {
		var n int
		if err := c.QueryRow(ctx, "SELECT 11").Scan(&n); err != nil || n != 11 {
			t.Errorf("client %d after all server connections were terminated: %d, %v", i, n, err)
		}
	}
}

func TestIdleClientTimeout(t *testing.T) {
	e := newEnv(t, envOptions{pool: `idle_client_timeout = "1s"`})
	ctx := context.Background()
	idle := e.connect(t)
	busy := e.connect(t)
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) { // busy keeps talking; idle says nothing
		if _, err := busy.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("an active client was cut off: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, si := range e.proxy.Sessions() {
		if si.ProcessID == idle.PgConn().PID() {
			t.Fatal("the session idle past idle_client_timeout is still open")
		}
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a client idle past idle_client_timeout still works")
	}
}
