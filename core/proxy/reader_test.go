package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// connectReader opens a pgx connection through the reader listener.
func (e *testEnv) connectReader(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.urlOf(e.readerAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// waitReplicas waits until every replica has replayed the writer's WAL up
// to its current position.
func (e *testEnv) waitReplicas(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := pgx.Connect(ctx, e.pg.SuperuserConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	var lsn string
	if err := w.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.replicas {
		c, err := pgx.Connect(ctx, r.SuperuserConnString("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		for {
			var done bool
			if err := c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&done); err != nil {
				t.Fatalf("replica %s: %v", r.Addr(), err)
			}
			if done {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.Close(ctx)
	}
}

// The reader listener sends transactions to the cluster's replicas, the
// least busy first, and a write there fails as PostgreSQL's own read-only
// error does; the main listener keeps sending everything to the writer.
func TestReaderEndpoint(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ports := map[int]string{e.pg.Port(): "writer"}
	for _, r := range e.replicas {
		ports[r.Port()] = "replica"
	}
	serverOf := func(tx pgx.Tx) (string, bool) {
		var port int
		var inRecovery bool
		if err := tx.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&port, &inRecovery); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s:%d", ports[port], port), inRecovery
	}

	w := e.connect(t)
	if _, err := w.Exec(ctx, "CREATE TABLE t (a int)"); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t)
	tx, err := w.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if who, rec := serverOf(tx); !strings.HasPrefix(who, "writer") || rec {
		t.Errorf("the main listener's transaction ran on %s (in recovery %v), want the writer", who, rec)
	}
	tx.Rollback(ctx)

	// Two readers in open transactions at once: one on each replica.
	a, b := e.connectReader(t), e.connectReader(t)
	txa, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txb, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	whoA, recA := serverOf(txa)
	whoB, recB := serverOf(txb)
	if !strings.HasPrefix(whoA, "replica") || !strings.HasPrefix(whoB, "replica") || !recA || !recB {
		t.Errorf("reader transactions ran on %s and %s, want replicas", whoA, whoB)
	}
	if whoA == whoB {
		t.Errorf("both reader transactions ran on %s: the other replica was idle", whoA)
	}
	txa.Rollback(ctx)
	txb.Rollback(ctx)

	// A write through the reader endpoint: PostgreSQL's 25006, and the
	// session goes on.
	_, err = a.Exec(ctx, "INSERT INTO t VALUES (1)")
	if code := sqlstate(err); code != "25006" {
		t.Errorf("a write through the reader endpoint: %v, want 25006", err)
	}
	var n int
	var port int
	if err := a.QueryRow(ctx, "SELECT count(*), inet_server_port() FROM t").Scan(&n, &port); err != nil {
		a.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
		t.Errorf("a read after the refused write: %v (next on %d, replicas %d, %d)", err, port, e.replicas[0].Port(), e.replicas[1].Port())
	}
	if err := w.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
		t.Errorf("the writer has %d rows (%v), want 0", n, err)
	}
}

// With no usable replica, reader transactions fall back to the writer
// (reader_fallback = "writer") but stay read-only there: a write through
// the reader endpoint fails with 25006, as it does on a replica, while the
// writer endpoint's sessions write as before.
func TestReaderFallbackToWriterIsReadOnly(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, monitor: true, admin: adminOn})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := e.connect(t)
	if _, err := w.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	r := e.connectReader(t)
	if err := e.replicas[0].Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var port int
		err := r.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
		if err == nil && port == e.pg.Port() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads did not fall back to the writer within 15s (last: port %d, %v)", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, sql := range []string{"INSERT INTO t VALUES (1)", "CREATE TABLE u (id int)"} {
		if _, err := r.Exec(ctx, sql); sqlstate(err) != "25006" {
			t.Errorf("%s through the reader endpoint on the writer: %v, want 25006", sql, err)
		}
	}
	tx, err := r.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); sqlstate(err) != "25006" {
		t.Errorf("INSERT in a reader transaction on the writer: %v, want 25006", err)
	}
	tx.Rollback(ctx)
	if _, err := r.Exec(ctx, "DISCARD ALL"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(ctx, "INSERT INTO t VALUES (3)"); sqlstate(err) != "25006" {
		t.Errorf("INSERT after DISCARD ALL: %v, want 25006", err)
	}
	for i := range 5 {
		if _, err := w.Exec(ctx, "INSERT INTO t VALUES (10)"); err != nil {
			t.Fatalf("write %d through the writer endpoint: %v", i, err)
		}
	}
}
