package proxy_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Failover found by probing (promotion = probe, nothing else told): the
// primary stops, its replica is promoted, and Sluice's probes find the new
// writer. Writes in flight at the moment of failure may fail; writes after
// it wait for the new writer instead of failing; idle clients keep their
// connections and their next transaction runs on the new writer.
func TestFailoverFoundByProbing(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, probe: true, pool: `borrow_timeout = "30s"`})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	setup := e.connect(t)
	if _, err := setup.Exec(ctx, "CREATE TABLE t (id serial PRIMARY KEY, at text)"); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t)
	idle := make([]*pgx.Conn, 10)
	for i := range idle {
		idle[i] = e.connect(t)
		if _, err := idle[i].Exec(ctx, "INSERT INTO t (at) VALUES ('before')"); err != nil {
			t.Fatal(err)
		}
	}

	// A writer keeps inserting through the failover.
	writer := e.connect(t)
	var promoted atomic.Int64 // unix nanos of the promotion
	var firstAfter atomic.Int64
	var failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := writer.Exec(ctx, "INSERT INTO t (at) VALUES ('during')")
			if err != nil {
				failed.Add(1)
				if code := sqlstate(err); code != "08007" {
					t.Errorf("a write in flight at the failure: %v, want 08007", err)
				}
				if writer.IsClosed() {
					t.Errorf("the writing client was disconnected: %v", err)
					return
				}
				continue
			}
			if p := promoted.Load(); p != 0 && firstAfter.Load() == 0 {
				firstAfter.Store(time.Now().UnixNano())
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := e.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	newPrimary := e.replicas[0]
	if err := newPrimary.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted.Store(time.Now().UnixNano())
	deadline := time.Now().Add(30 * time.Second)
	for firstAfter.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if firstAfter.Load() == 0 {
		t.Fatal("no write succeeded within 30s of the promotion")
	}
	t.Logf("promotion to first successful write: %s; failed writes: %d",
		time.Duration(firstAfter.Load()-promoted.Load()), failed.Load())
	// One client writes: only the statement in flight when the primary
	// stopped may fail; later ones wait for the new writer.
	if failed.Load() > 1 {
		t.Errorf("%d writes failed, want at most the one in flight", failed.Load())
	}

	// Every idle client's next transaction succeeds, on the new writer.
	for i, c := range idle {
		var port int
		if err := c.QueryRow(ctx, "INSERT INTO t (at) VALUES ('after') RETURNING inet_server_port()").Scan(&port); err != nil {
			t.Errorf("idle client %d after the failover: %v", i, err)
		} else if port != newPrimary.Port() {
			t.Errorf("idle client %d wrote on port %d, want the new writer %d", i, port, newPrimary.Port())
		}
	}
	var after int
	if err := setup.QueryRow(ctx, "SELECT count(*) FROM t WHERE at = 'after'").Scan(&after); err != nil || after != len(idle) {
		t.Errorf("the new writer has %d rows written after the failover (%v), want %d", after, err, len(idle))
	}
}
