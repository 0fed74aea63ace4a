package proxy_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// failoverResult is what failoverUnderLoad measured.
type failoverResult struct {
	toFirstWrite   time.Duration // from the promotion to the first commit after it
	failed         int64         // transactions that failed
	committed      int64         // transactions committed
	idleKept, idle int           // idle clients whose next transaction succeeded
}

// failoverUnderLoad runs write transactions on writers clients while the
// primary stops (immediate shutdown) and its first replica is promoted;
// tell, if set, then tells discovery. It checks that only transactions in
// flight at the failure fail (at most one per client, with a retryable
// SQLSTATE), that no client is disconnected, and that every idle client's
// next transaction runs on the new writer.
func failoverUnderLoad(t *testing.T, e *testEnv, writers, idles int, tell func()) failoverResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup := e.connect(t)
	if _, err := setup.Exec(ctx, "CREATE TABLE t (id bigserial PRIMARY KEY, client int, at text)"); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t)
	idle := make([]*pgx.Conn, idles)
	for i := range idle {
		idle[i] = e.connect(t)
		if _, err := idle[i].Exec(ctx, "INSERT INTO t (client, at) VALUES (-1, 'before')"); err != nil {
			t.Fatal(err)
		}
	}
	// A client with state Sluice tracks: a tracked SET, a startup
	// parameter and protocol-level prepared statements (pgx's statement
	// cache), all rebuilt on whichever connection it borrows.
	scfg, err := pgx.ParseConfig(e.url("application_name=stateful"))
	if err != nil {
		t.Fatal(err)
	}
	stateful, err := pgx.ConnectConfig(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stateful.Close(context.Background())
	if _, err := stateful.Exec(ctx, "SET search_path = pg_catalog, public"); err != nil {
		t.Fatal(err)
	}
	var one int
	if err := stateful.QueryRow(ctx, "SELECT $1::int", 1).Scan(&one); err != nil {
		t.Fatal(err)
	}
	// A pinned client: its session state (LISTEN) lives on one server
	// connection and cannot be rebuilt on the new writer.
	pinned := e.connect(t)
	if _, err := pinned.Exec(ctx, "LISTEN failover"); err != nil {
		t.Fatal(err)
	}
	conns := make([]*pgx.Conn, writers)
	for i := range conns {
		conns[i] = e.connect(t)
	}

	var promoted, firstAfter, down atomic.Int64 // unix nanos; down: the primary's shutdown returned
	var failed, committed atomic.Int64
	perClient := make([]int, writers)
	errs := make([][]string, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now().UnixNano()
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO t (client, at) VALUES ($1, 'during')", i)
					return err
				})
				if err != nil {
					failed.Add(1)
					perClient[i]++
					errs[i] = append(errs[i], time.Now().Format("15:04:05.000000")+" "+err.Error())
					if d := down.Load(); d != 0 && start > d {
						t.Errorf("client %d: a transaction begun after the primary was down failed: %v", i, err)
					}
					if code := sqlstate(err); !slices.Contains([]string{"08007", "40001", "57P01", "57P02"}, code) {
						t.Errorf("client %d: a transaction failed with %v, want a retryable SQLSTATE", i, err)
					}
					if c.IsClosed() {
						t.Errorf("client %d was disconnected: %v", i, err)
						return
					}
					continue
				}
				committed.Add(1)
				if promoted.Load() != 0 && firstAfter.Load() == 0 {
					firstAfter.CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		}()
	}
	// Load first: every writer has committed (a loaded machine under
	// -race may take a while to get 50 clients going).
	for start := time.Now(); committed.Load() < int64(writers); {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("only %d transactions committed in 30s before the failure", committed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if err := e.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	down.Store(time.Now().UnixNano())
	newPrimary := e.replicas[0]
	if err := newPrimary.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted.Store(time.Now().UnixNano())
	if tell != nil {
		tell()
	}
	deadline := time.Now().Add(30 * time.Second)
	for firstAfter.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // writes go on on the new writer
	close(stop)
	wg.Wait()
	if firstAfter.Load() == 0 {
		t.Fatal("no write succeeded within 30s of the promotion")
	}
	r := failoverResult{
		toFirstWrite: time.Duration(firstAfter.Load() - promoted.Load()),
		failed:       failed.Load(), committed: committed.Load(), idle: idles,
	}
	// Only transactions in flight while the primary went down may fail:
	// one per client, or two when the first failed as the server began
	// to die and the next one was sent to a backend still dying.
	for i, n := range perClient {
		if n > 2 {
			t.Errorf("client %d had %d failed transactions: %q", i, n, errs[i])
		}
	}
	for i, c := range idle {
		var port int
		if err := c.QueryRow(ctx, "INSERT INTO t (client, at) VALUES (-1, 'after') RETURNING inet_server_port()").Scan(&port); err != nil {
			t.Errorf("idle client %d after the failover: %v", i, err)
		} else if port != newPrimary.Port() {
			t.Errorf("idle client %d wrote on port %d, want the new writer %d", i, port, newPrimary.Port())
		} else {
			r.idleKept++
		}
	}
	var sp, app string
	var two int
	if err := stateful.QueryRow(ctx, "SELECT current_setting('search_path'), current_setting('application_name'), $1::int", 2).Scan(&sp, &app, &two); err != nil {
		t.Errorf("the stateful client after the failover: %v", err)
	} else if sp != "pg_catalog, public" || app != "stateful" || two != 2 {
		t.Errorf("the stateful client's state on the new writer: search_path %q, application_name %q, %d", sp, app, two)
	}
	if err := stateful.QueryRow(ctx, "SELECT $1::int", 3).Scan(&two); err != nil || two != 3 {
		t.Errorf("a statement prepared before the failover, after it: %d, %v", two, err)
	}
	_, err = pinned.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Detail, "pinned to its server connection (LISTEN") {
		t.Errorf("the pinned client after the failover: %v (%+v), want 08006 saying its pinned state is lost", err, pe)
	}
	t.Logf("promotion to first successful write: %s; transactions committed %d, failed %d; idle clients kept %d/%d",
		r.toFirstWrite, r.committed, r.failed, r.idleKept, r.idle)
	return r
}

// Failover under load with Consul as the source of truth (promotion =
// discovery): the writer is taken when Consul names it.
func TestConsulFailoverUnderLoad(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, consul: true, pool: `max_connections = 80
  borrow_timeout = "30s"`})
	failoverUnderLoad(t, e, 50, 20, func() {
		e.consul.Deregister(t, "pg0")
		e.consul.Register(t, "pg1", "pg-main", "127.0.0.1", e.replicas[0].Port(), []string{"primary"}, nil)
	})
}

// The same with promotion = "probe" and Consul never told: the probes
// find the promoted replica.
func TestConsulFailoverFoundByProbes(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, consul: true, cluster: `promotion = "probe"`, pool: `max_connections = 80
  borrow_timeout = "30s"`})
	failoverUnderLoad(t, e, 50, 20, nil)
}

// Consul names as the writer a node that is in recovery: no write is sent
// to it (writes wait for a writer, then fail with 57P03, not with the
// standby's 25006). When it is promoted it is taken; the old primary, still
// up and out of recovery (a split brain), receives nothing more, and a
// transaction open there when Consul moved the writer cannot commit.
func TestConsulWriterInRecoveryIsFenced(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, consul: true, pool: `borrow_timeout = "2s"`})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.connect(t)
	if _, err := c.Exec(ctx, "CREATE TABLE t (id serial PRIMARY KEY, at text)"); err != nil {
		t.Fatal(err)
	}
	// A transaction open on the old primary while the writer moves.
	open := e.connect(t)
	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t (at) VALUES ('open during the move')"); err != nil {
		t.Fatal(err)
	}

	e.consul.Deregister(t, "pg0")
	e.consul.Register(t, "pg1", "pg-main", "127.0.0.1", e.replicas[0].Port(), []string{"primary"}, nil)
	_, err = c.Exec(ctx, "INSERT INTO t (at) VALUES ('to a standby')")
	if code := sqlstate(err); code != "57P03" {
		t.Fatalf("a write while Consul's writer is in recovery: %v, want 57P03 (no writer), never the standby's 25006", err)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("the transaction open on the old primary committed after the writer moved")
	}
	old, err := pgx.Connect(ctx, e.pg.SuperuserConnString("appdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(ctx)
	var before int
	if err := old.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if before != 0 {
		t.Errorf("the old primary has %d rows; none was committed before the move", before)
	}

	if err := e.replicas[0].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		var port int
		if err := c.QueryRow(ctx, "INSERT INTO t (at) VALUES ('after') RETURNING inet_server_port()").Scan(&port); err != nil {
			t.Fatalf("write %d after the promotion: %v", i, err)
		}
		if port != e.replicas[0].Port() {
			t.Fatalf("write %d went to port %d, want the promoted node %d", i, port, e.replicas[0].Port())
		}
	}
	var after int
	if err := old.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("%d rows reached the old primary after it was fenced", after-before)
	}
}

// With Consul stopped, traffic goes on with the last topology it gave;
// when it comes back, a change is picked up.
func TestConsulDownKeepsLastTopology(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, consul: true, admin: adminOn})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.connect(t)
	if _, err := w.Exec(ctx, "CREATE TABLE t (id serial PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	r := e.connectReader(t)
	readPort := func() int {
		var port int
		if err := r.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			t.Fatalf("read: %v", err)
		}
		return port
	}
	if p := readPort(); p != e.replicas[0].Port() {
		t.Fatalf("read on port %d, want the replica %d", p, e.replicas[0].Port())
	}

	e.consul.Stop()
	var writes, reads int
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		if _, err := w.Exec(ctx, "INSERT INTO t DEFAULT VALUES"); err != nil {
			t.Fatalf("write %d with Consul down: %v", writes, err)
		}
		writes++
		if p := readPort(); p != e.replicas[0].Port() {
			t.Fatalf("read %d with Consul down on port %d, want the replica %d", reads, p, e.replicas[0].Port())
		}
		reads++
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("with Consul down for 30s: %d writes and %d reads, none failed", writes, reads)
	m := e.scrape(t)
	if v := m.value("sluice_discovery_error", "cluster", "main", "source", "consul"); v != 1 {
		t.Errorf("sluice_discovery_error{source=consul} = %v with Consul down, want 1", v)
	}
	if v := m.value("sluice_discovery_staleness_seconds", "cluster", "main", "source", "consul"); v < 25 {
		t.Errorf("sluice_discovery_staleness_seconds{source=consul} = %v after 30s down, want about 30", v)
	}

	e.consul.Restart(t)
	// The replica leaves the service: reads fall back to the writer.
	e.consul.Deregister(t, "pg1")
	deadline := time.Now().Add(10 * time.Second)
	for readPort() != e.pg.Port() {
		if time.Now().After(deadline) {
			t.Fatal("the replica's deregistration after Consul came back was not picked up within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := e.scrape(t).value("sluice_discovery_error", "cluster", "main", "source", "consul"); v != 0 {
		t.Errorf("sluice_discovery_error{source=consul} = %v with Consul back, want 0", v)
	}
}

// A replica whose replay is paused leaves the reader pool once it lags
// past max_replica_lag, and comes back when replay resumes.
func TestReplicaPausedLeavesReaderPool(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 2, monitor: true, cluster: `max_replica_lag = "1s"`, admin: adminOn})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := e.connect(t)
	if _, err := w.Exec(ctx, "CREATE TABLE t (id serial PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the writer keeps writing, so that the paused replica falls behind
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := w.Exec(ctx, "INSERT INTO t DEFAULT VALUES"); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	e.waitReplicas(t)
	readers := []*pgx.Conn{e.connectReader(t), e.connectReader(t)}
	// ports reads 20 times on two clients and returns the ports that
	// answered.
	ports := func() map[int]int {
		seen := map[int]int{}
		for range 10 {
			var wg sync.WaitGroup
			var mu sync.Mutex
			for _, r := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var port int
					if err := r.QueryRow(ctx, "SELECT inet_server_port() FROM pg_catalog.pg_sleep(0.005)").Scan(&port); err != nil {
						t.Errorf("read: %v", err)
						return
					}
					mu.Lock()
					seen[port]++
					mu.Unlock()
				}()
			}
			wg.Wait()
		}
		return seen
	}
	paused, other := e.replicas[0], e.replicas[1]
	if seen := ports(); seen[paused.Port()] == 0 || seen[other.Port()] == 0 {
		t.Fatalf("reads before the pause: %v, want both replicas", seen)
	}
	su, err := pgx.Connect(ctx, paused.SuperuserConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, "SELECT pg_catalog.pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		if seen := ports(); seen[paused.Port()] == 0 {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatal("the paused replica still serves reads after 15s")
		}
	}
	t.Logf("paused replica left the reader pool %s after the pause (max_replica_lag 1s)", time.Since(start).Round(time.Millisecond))
	m := e.scrape(t)
	if v := m.value("sluice_replicas_banned", "cluster", "main", "why", "lagging"); v != 1 {
		t.Errorf("sluice_replicas_banned{why=lagging} = %v, want 1", v)
	}
	if v := m.value("sluice_replica_lag_seconds", "replica", paused.Addr()); v < 1 {
		t.Errorf("sluice_replica_lag_seconds of the paused replica = %v, want past 1s", v)
	}
	if v := m.value("sluice_replica_lag_bytes", "replica", paused.Addr()); v <= 0 {
		t.Errorf("sluice_replica_lag_bytes of the paused replica = %v, want > 0", v)
	}
	if _, err := su.Exec(ctx, "SELECT pg_catalog.pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		if seen := ports(); seen[paused.Port()] > 0 {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatal("the resumed replica did not come back within 15s")
		}
	}
	t.Logf("resumed replica back in the reader pool after %s", time.Since(start).Round(time.Millisecond))
	if v := e.scrape(t).value("sluice_replicas_banned", "cluster", "main"); v != 0 {
		t.Errorf("sluice_replicas_banned = %v after the replica caught up, want 0", v)
	}
}

// A replica killed under read load: reads move to the other one within
// 2s, and only reads in flight at the kill fail.
func TestReplicaKilledReadsMove(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 2, monitor: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const clients = 8
	readers := make([]*pgx.Conn, clients)
	for i := range readers {
		readers[i] = e.connectReader(t)
	}
	killed, other := e.replicas[0], e.replicas[1]
	var kill, dead atomic.Int64   // unix nanos: the kill began, the replica was down
	var lateOnKilled atomic.Int64 // reads the killed replica answered once down
	var failed, after atomic.Int64
	var firstOnOther atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var port int
				err := r.QueryRow(ctx, "SELECT inet_server_port() FROM pg_catalog.pg_sleep(0.002)").Scan(&port)
				k := kill.Load()
				switch {
				case err != nil && k == 0:
					t.Errorf("reader %d before the kill: %v", i, err)
					return
				case err != nil:
					failed.Add(1)
					if r.IsClosed() {
						t.Errorf("reader %d was disconnected: %v", i, err)
						return
					}
				case k != 0:
					after.Add(1)
					if port == other.Port() {
						firstOnOther.CompareAndSwap(0, time.Now().UnixNano())
					}
					if port == killed.Port() && dead.Load() != 0 {
						lateOnKilled.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	kill.Store(time.Now().UnixNano())
	if err := killed.Stop(); err != nil {
		t.Fatal(err)
	}
	dead.Store(time.Now().UnixNano())
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if after.Load() == 0 || firstOnOther.Load() == 0 {
		t.Fatalf("no read succeeded within 2s of the kill (%d failed)", failed.Load())
	}
	t.Logf("after the kill: first read on the other replica after %s; %d reads succeeded, %d failed",
		time.Duration(firstOnOther.Load()-kill.Load()).Round(time.Microsecond), after.Load(), failed.Load())
	if failed.Load() > clients {
		t.Errorf("%d reads failed; only the %d in flight at the kill may", failed.Load(), clients)
	}
	if n := lateOnKilled.Load(); n != 0 {
		t.Errorf("%d reads were answered by the killed replica once it was down", n)
	}
}

// Self-registration: each listener appears in Consul with a passing check
// on the admin /healthz, tagged with its role, and disappears when Sluice
// shuts down.
func TestSelfRegistrationInConsul(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, consul: true, admin: `address = "127.0.0.1:0"
  register {
    service        = "sluice-fleet"
    tags           = ["Blue"]
    check_interval = "200ms"
  }`})
	c := e.consul.Client(t)
	passing := func() []*api.ServiceEntry {
		entries, _, err := c.Health().Service("sluice-fleet", "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return entries
	}
	deadline := time.Now().Add(15 * time.Second)
	var entries []*api.ServiceEntry
	for entries = passing(); len(entries) < 2; entries = passing() {
		if time.Now().After(deadline) {
			t.Fatalf("after 15s, %d passing sluice-fleet instances, want 2 (writer and reader listeners)", len(entries))
		}
		time.Sleep(50 * time.Millisecond)
	}
	ports := map[string]int{}
	for _, en := range entries {
		if !slices.Contains(en.Service.Tags, "Blue") {
			t.Errorf("instance %s tags %v lack the configured tag", en.Service.ID, en.Service.Tags)
		}
		ports[en.Service.Meta["role"]] = en.Service.Port
		if !slices.Contains(en.Service.Tags, en.Service.Meta["role"]) {
			t.Errorf("instance %s tags %v lack its role %q", en.Service.ID, en.Service.Tags, en.Service.Meta["role"])
		}
	}
	if want := e.proxy.Addr("main").(*net.TCPAddr).Port; ports["writer"] != want {
		t.Errorf("writer instance port %d, want the main listener's %d", ports["writer"], want)
	}
	if want := e.proxy.Addr("reader").(*net.TCPAddr).Port; ports["reader"] != want {
		t.Errorf("reader instance port %d, want the reader listener's %d", ports["reader"], want)
	}
	e.close()
	if left := passing(); len(left) != 0 {
		t.Errorf("%d instances still registered after shutdown", len(left))
	}
	all, _, err := c.Catalog().Service("sluice-fleet", "", nil)
	if err != nil || len(all) != 0 {
		t.Errorf("catalog after shutdown: %d instances, %v", len(all), err)
	}
}
