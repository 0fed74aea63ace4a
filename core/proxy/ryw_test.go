package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/core/proxy"
)

// lagOptions start a primary whose WAL writer flushes every 5ms (pgtest
// runs with synchronous_commit off: a commit reaches the replicas only
// once the WAL writer has flushed it), with two streaming replicas and
// the split listener.
func lagOptions(cluster string) envOptions {
	return envOptions{
		replicas: 2,
		split:    true,
		cluster:  cluster,
		admin:    adminOn,
		pg:       pgtest.Options{Settings: map[string]string{"max_connections": "200", "wal_writer_delay": "5ms"}},
	}
}

// lagReplicas makes the replicas fall behind in bursts until the test
// ends: replay is paused for 30ms, then runs for 30ms. It returns how many
// bursts it made so far.
func lagReplicas(t *testing.T, e *testEnv) func() int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var conns []*pgx.Conn
	for _, r := range e.replicas {
		c, err := pgx.Connect(ctx, r.SuperuserConnString("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	var bursts atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		set := func(fn string) error {
			for _, c := range conns {
				if _, err := c.Exec(ctx, "SELECT pg_catalog."+fn+"()"); err != nil {
					return err
				}
			}
			return nil
		}
		for ctx.Err() == nil {
			if set("pg_wal_replay_pause") != nil {
				break
			}
			bursts.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Millisecond):
			}
			if err := set("pg_wal_replay_resume"); err != nil && ctx.Err() == nil {
				t.Errorf("resuming replay: %v", err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		for _, c := range conns {
			// Replay must run again whatever happened, or the replicas
			// never catch up with the primary's shutdown.
			c.Exec(context.Background(), "SELECT pg_catalog.pg_wal_replay_resume()")
			c.Close(context.Background())
		}
	})
	return func() int { return int(bursts.Load()) }
}

// pairs runs clients×perClient write-then-read pairs through the listener
// at addr, each client on its own connection: an autocommit INSERT of a
// unique row, then at once a SELECT of it that reports where it ran. It
// returns how many reads missed their row and how many ran on a replica.
func pairs(t *testing.T, e *testEnv, addr string, clients, perClient int) (stale, onReplica int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var staleN, replicaN atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		conn := e.connectTo(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				id := c*1_000_000 + i
				if _, err := conn.Exec(ctx, "INSERT INTO ryw (id) VALUES ($1)", id); err != nil {
					errs <- fmt.Errorf("client %d insert %d: %w", c, i, err)
					return
				}
				var found, inRecovery bool
				if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM ryw WHERE id = $1), pg_catalog.pg_is_in_recovery()", id).Scan(&found, &inRecovery); err != nil {
					errs <- fmt.Errorf("client %d read %d: %w", c, i, err)
					return
				}
				if !found {
					staleN.Add(1)
				}
				if inRecovery {
					replicaN.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return staleN.Load(), replicaN.Load()
}

// setUpRYW creates the table the pairs write and waits until the
// replicas have it.
func setUpRYW(t *testing.T, e *testEnv) {
	t.Helper()
	if _, err := e.connect(t).Exec(context.Background(), "CREATE TABLE ryw (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t)
}

// With read_your_writes, a client that reads what it has just written
// through the split listener always finds it, while the replicas lag
// behind in bursts, and most reads still go to a replica.
func TestReadYourWritesThroughSplitListener(t *testing.T) {
	e := newEnv(t, lagOptions(`read_your_writes = true`))
	setUpRYW(t, e)
	bursts := lagReplicas(t, e)
	start := time.Now()
	const clients, perClient = 10, 1000
	stale, onReplica := pairs(t, e, e.splitAddr, clients, perClient)
	st := e.proxy.ReadYourWritesStats()
	t.Logf("%d pairs in %v while replay paused %d times: %d stale reads, %d reads on a replica; borrows with a position: %d fresh, %d waits, %d fallbacks to the writer",
		clients*perClient, time.Since(start).Round(time.Millisecond), bursts(), stale, onReplica, st.Fresh, st.Waits, st.Fallbacks)
	if stale != 0 {
		t.Errorf("%d reads did not see the client's own write", stale)
	}
	if onReplica == 0 || st.Fresh+st.Waits == 0 {
		t.Errorf("no read reached a replica (%d on a replica, stats %+v)", onReplica, st)
	}
	if bursts() < 2 {
		t.Errorf("the replicas lagged only %d times: the test did not test", bursts())
	}
}

// Without it the same load reads stale rows: the test above can fail. An
// explicit SET sluice.min_lsn still works.
func TestReadYourWritesOffReadsStale(t *testing.T) {
	e := newEnv(t, lagOptions(``))
	setUpRYW(t, e)
	bursts := lagReplicas(t, e)
	stale, onReplica := pairs(t, e, e.splitAddr, 10, 100)
	t.Logf("1000 pairs, replay paused %d times: %d stale reads, %d reads on a replica", bursts(), stale, onReplica)
	if stale == 0 {
		t.Errorf("no stale read without read_your_writes (%d reads on a replica)", onReplica)
	}
	if st := e.proxy.ReadYourWritesStats(); st != (proxy.ReadYourWritesStats{}) {
		t.Errorf("read-your-writes borrows with it off: %+v", st)
	}

	// SET sluice.min_lsn is honoured all the same: an explicit request.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.connectTo(t, e.splitAddr)
	stale = 0
	const n = 100
	for i := range n {
		id := 50_000_000 + i
		if _, err := c.Exec(ctx, "INSERT INTO ryw (id) VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
		var lsn string // on the writer: the function works only there
		if err := c.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "SET sluice.min_lsn = '"+lsn+"'"); err != nil {
			t.Fatal(err)
		}
		var found bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM ryw WHERE id = $1)", id).Scan(&found); err != nil {
			t.Fatal(err)
		}
		if !found {
			stale++
		}
	}
	st := e.proxy.ReadYourWritesStats()
	t.Logf("%d pairs with SET sluice.min_lsn: %d stale; %d fresh, %d waits, %d fallbacks", n, stale, st.Fresh, st.Waits, st.Fallbacks)
	if stale != 0 || st.Fresh+st.Waits < n {
		t.Errorf("SET sluice.min_lsn with read_your_writes off: %d stale reads, stats %+v", stale, st)
	}
}

// A position handed across connections: written through the writer
// endpoint, read back with SHOW sluice.last_lsn, set with SET
// sluice.min_lsn on a reader-endpoint connection, whose read then never
// misses the row.
func TestMinLSNAcrossConnections(t *testing.T) {
	e := newEnv(t, lagOptions(`read_your_writes = true`))
	setUpRYW(t, e)
	bursts := lagReplicas(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, r := e.connect(t), e.connectReader(t)
	stale, onReplica, last := 0, 0, ""
	const n = 500
	for i := range n {
		if _, err := w.Exec(ctx, "INSERT INTO ryw (id) VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
		var lsn string
		if err := w.QueryRow(ctx, "SHOW sluice.last_lsn", pgx.QueryExecModeSimpleProtocol).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		if lsn == last || lsn == "0/0" {
			t.Fatalf("write %d: sluice.last_lsn %q, after %q", i, lsn, last)
		}
		last = lsn
		if _, err := r.Exec(ctx, "SET sluice.min_lsn = '"+lsn+"'"); err != nil {
			t.Fatal(err)
		}
		var found, inRecovery bool
		if err := r.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM ryw WHERE id = $1), pg_catalog.pg_is_in_recovery()", i).Scan(&found, &inRecovery); err != nil {
			t.Fatal(err)
		}
		if !found {
			stale++
		}
		if inRecovery {
			onReplica++
		}
	}
	var shown string
	if err := r.QueryRow(ctx, "SHOW sluice.min_lsn", pgx.QueryExecModeSimpleProtocol).Scan(&shown); err != nil || shown != last {
		t.Errorf("SHOW sluice.min_lsn = %q (%v), want %q", shown, err, last)
	}
	st := e.proxy.ReadYourWritesStats()
	t.Logf("%d pairs across connections, replay paused %d times: %d stale, %d on a replica; %d fresh, %d waits, %d fallbacks",
		n, bursts(), stale, onReplica, st.Fresh, st.Waits, st.Fallbacks)
	if stale != 0 {
		t.Errorf("%d reads after SET sluice.min_lsn missed the row", stale)
	}
	m := e.scrape(t)
	for name, want := range map[string]uint64{
		"sluice_read_your_writes_fresh_total":     st.Fresh,
		"sluice_read_your_writes_waits_total":     st.Waits,
		"sluice_read_your_writes_fallbacks_total": st.Fallbacks,
	} {
		if got := m.value(name); got != float64(want) {
			t.Errorf("%s = %v, want %d", name, got, want)
		}
	}
	if onReplica == 0 {
		t.Error("no read reached a replica")
	}
	// The reader connection's position is the client's own: a fresh
	// reader connection reads with none, and the setting is refused in a
	// prepared statement.
	var v string
	if err := e.connectReader(t).QueryRow(ctx, "SHOW sluice.min_lsn", pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil || v != "0/0" {
		t.Errorf("a new connection's sluice.min_lsn = %q (%v), want 0/0", v, err)
	}
	_, err := r.Exec(ctx, "SET sluice.min_lsn = 'nonsense'")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "22P02" || pe.Message != `invalid input syntax for type pg_lsn: "nonsense"` {
		t.Errorf("a bad position: %v", err)
	}
	if err := r.QueryRow(ctx, "SHOW sluice.min_lsn").Scan(&v); !errors.As(err, &pe) || pe.Code != "0A000" {
		t.Errorf("SHOW sluice.min_lsn prepared: %v, want 0A000", err)
	}
}

// The split listener sends what only reads to a replica and everything
// else to the writer; a pinned client keeps its connection.
func TestSplitListenerRouting(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 2, split: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setup := e.connect(t)
	for _, sql := range []string{
		"CREATE TABLE t (a int)",
		"INSERT INTO t VALUES (0)",
		"CREATE SEQUENCE s",
		"CREATE FUNCTION logged() RETURNS bool LANGUAGE sql AS $$ INSERT INTO t VALUES (42) RETURNING true $$",
	} {
		if _, err := setup.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	e.waitReplicas(t)
	c := e.connectTo(t, e.splitAddr)
	onReplica := func(sql string, args ...any) bool {
		t.Helper()
		var rec bool
		if err := c.QueryRow(ctx, sql, args...).Scan(&rec); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return rec
	}
	for _, tc := range []struct {
		sql     string
		replica bool
	}{
		{"SELECT pg_catalog.pg_is_in_recovery()", true},
		{"SELECT pg_is_in_recovery() FROM (SELECT count(*) FROM t) c", true},
		{"SELECT pg_is_in_recovery() FROM t WHERE a = 0 FOR UPDATE", false},
		{"INSERT INTO t VALUES (1) RETURNING pg_is_in_recovery()", false},
		{"SELECT pg_is_in_recovery() FROM (SELECT nextval('s') AS v) n WHERE n.v > 0", false},
		{"SELECT pg_is_in_recovery() FROM (SELECT logged() AS x) l WHERE l.x", false}, // a function that writes
		{"WITH d AS (DELETE FROM t WHERE a = 1 RETURNING a) SELECT pg_is_in_recovery()", false},
	} {
		if got := onReplica(tc.sql); got != tc.replica {
			t.Errorf("%s: on a replica %v, want %v", tc.sql, got, tc.replica)
		}
	}
	// The same in simple queries.
	var rec bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()", pgx.QueryExecModeSimpleProtocol).Scan(&rec); err != nil || !rec {
		t.Errorf("simple-query read on a replica: %v (%v)", rec, err)
	}
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery() FROM (SELECT nextval('s') AS v) n WHERE n.v > 0", pgx.QueryExecModeSimpleProtocol).Scan(&rec); err != nil || rec {
		t.Errorf("simple-query nextval on a replica: %v (%v)", rec, err)
	}
	// A READ ONLY transaction goes to a replica, any other to the writer.
	for _, tc := range []struct {
		begin   string
		replica bool
	}{
		{"BEGIN READ ONLY", true},
		{"START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", true},
		{"BEGIN", false},
	} {
		if _, err := c.Exec(ctx, tc.begin); err != nil {
			t.Fatal(err)
		}
		if got := onReplica("SELECT pg_is_in_recovery()"); got != tc.replica {
			t.Errorf("%s: on a replica %v, want %v", tc.begin, got, tc.replica)
		}
		if _, err := c.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := setup.QueryRow(ctx, "SELECT count(*) FROM t WHERE a = 42").Scan(&n); err != nil || n != 1 {
		t.Errorf("the writing function ran %d times on the writer (%v)", n, err)
	}
	// Pinned (LISTEN, sent to the writer): its reads stay on its connection.
	if _, err := c.Exec(ctx, "LISTEN ch"); err != nil {
		t.Fatal(err)
	}
	if onReplica("SELECT pg_is_in_recovery()") {
		t.Error("a pinned client's read left its connection for a replica")
	}
}
