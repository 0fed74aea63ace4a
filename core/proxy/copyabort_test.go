package proxy_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// slowFailingRows feeds COPY one 100 kB row every 100 ms; the third is a
// NULL for a NOT NULL column, which the server refuses at once.
type slowFailingRows struct{ n int }

func (r *slowFailingRows) Next() bool { time.Sleep(100 * time.Millisecond); r.n++; return r.n < 100 }
func (r *slowFailingRows) Err() error { return nil }
func (r *slowFailingRows) Values() ([]any, error) {
	if r.n == 3 {
		return []any{nil}, nil
	}
	return []any{make([]byte, 100_000)}, nil
}

// A server error in the middle of COPY FROM STDIN reaches the client while
// it is still sending (pgx stops at once), as it does directly.
func TestCopyFromServerErrorArrivesMidway(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, target := range []string{"direct", "sluice"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c := e.connect(t)
		if target == "direct" {
			c = e.direct(t, pgx.QueryExecModeExec)
		}
		if _, err := c.Exec(ctx, "CREATE TEMPORARY TABLE foo (a bytea NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := c.CopyFrom(ctx, pgx.Identifier{"foo"}, []string{"a"}, &slowFailingRows{})
		took := time.Since(start)
		if code := sqlstate(err); code != "23502" {
			t.Errorf("%s: COPY with a bad row: %v, want 23502", target, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s: the failing COPY took %s: the error was not seen while sending", target, took)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM foo").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: after the failed COPY: %d rows, %v", target, n, err)
		}
		cancel()
	}
}

// Batches from several session-mode clients at once, each pipelining two
// queries: a wake-up of the server watcher while a client message is half
// buffered must not stall the session.
func TestSessionModeBatches(t *testing.T) {
	e := newEnv(t, envOptions{pool: `mode = "session"`})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		c := e.connect(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				b := &pgx.Batch{}
				b.Queue("SELECT 1")
				b.Queue("SELECT $1::int", i)
				br := c.SendBatch(ctx, b)
				var one, got int
				err := br.QueryRow().Scan(&one)
				if err == nil {
					err = br.QueryRow().Scan(&got)
				}
				br.Close()
				if err != nil || one != 1 || got != i {
					t.Errorf("batch %d: %d, %d, %v", i, one, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
