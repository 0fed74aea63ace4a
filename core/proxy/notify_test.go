package proxy_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A listening client that runs queries while notifications keep arriving,
// and a notifier doing one NOTIFY after another, both through Sluice: each
// query gets its whole answer, no session stalls, and notifications reach
// the listener between and inside its queries, as they do directly. (pgx's
// own suite found a stall here: a wake-up of the server watcher taken for
// data sent the session to read a server that owed nothing.)
func TestNotificationsWhileBusy(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{pool: `mode = "` + mode + `"`})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			listener, notifier := e.connect(t), e.connect(t)
			if _, err := listener.Exec(ctx, "LISTEN busy"); err != nil {
				t.Fatal(err)
			}
			var sent atomic.Int64
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
					if _, err := notifier.Exec(ctx, "NOTIFY busy, 'hello'", pgx.QueryExecModeSimpleProtocol); err != nil {
						t.Errorf("NOTIFY %d: %v", sent.Load()+1, err)
						return
					}
					sent.Add(1)
				}
			}()
			for i := range 5000 {
				var sum, count int
				rows, err := listener.Query(ctx, "SELECT generate_series(1, $1::int)", 100)
				if err == nil {
					for rows.Next() {
						var n int
						if err = rows.Scan(&n); err != nil {
							break
						}
						sum += n
						count++
					}
					rows.Close()
					if err == nil {
						err = rows.Err()
					}
				}
				if err != nil || sum != 5050 || count != 100 {
					t.Errorf("query %d: %d rows summing to %d, %v", i, count, sum, err)
					break
				}
			}
			close(stop)
			wg.Wait()
			if t.Failed() {
				return
			}
			// Every notification sent reaches the listener, in order of
			// arrival; pgx keeps those that came inside a query.
			if _, err := notifier.Exec(ctx, "NOTIFY busy, 'last'"); err != nil {
				t.Fatal(err)
			}
			var got int64
			for {
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				n, err := listener.WaitForNotification(wctx)
				wcancel()
				if err != nil {
					t.Fatalf("after %d of %d notifications: %v", got, sent.Load()+1, err)
				}
				got++
				if n.Payload == "last" {
					break
				}
			}
			if got != sent.Load()+1 {
				t.Errorf("listener got %d notifications, %d were sent", got, sent.Load()+1)
			}
			if sent.Load() == 0 {
				t.Error("the notifier sent nothing while the listener was busy")
			}
		})
	}
}

// A pinned client that leaves has its connection cleaned (DISCARD ALL)
// under a deadline of its own; the next client borrowing that connection
// must not inherit the deadline (pgx's suite saw 08006 "i/o timeout" five
// seconds after a listener left).
func TestNoDeadlineInheritedAfterCleanup(t *testing.T) {
	e := newEnv(t, envOptions{pool: oneConnPool})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := e.connect(t)
	if _, err := a.Exec(ctx, "LISTEN gone"); err != nil {
		t.Fatal(err)
	}
	a.Close(ctx)
	b := e.connect(t)
	if _, err := b.Exec(ctx, "SELECT pg_sleep(6)"); err != nil {
		t.Fatalf("a query on the connection a pinned client left: %v", err)
	}
}
