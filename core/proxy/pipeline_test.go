package proxy_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// One pipeline of 100,000 statements and a single Sync, as pgx's
// ExecBatch sends it: the server flushes its replies in 8 kB pieces, so a
// reply can stop half-way until the server has more input. Every statement
// gets its answer, in both pooling modes, as it does directly.
func TestHugePipeline(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{pool: `mode = "` + mode + `"`})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			c := e.connect(t)
			const count = 100_000
			b := &pgconn.Batch{}
			for i := range count {
				b.ExecParams("SELECT $1::text", [][]byte{[]byte(strconv.Itoa(i))}, nil, nil, nil)
			}
			results, err := c.PgConn().ExecBatch(ctx, b).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if len(results) != count {
				t.Fatalf("%d results, want %d", len(results), count)
			}
			for i, r := range results {
				if len(r.Rows) != 1 || string(r.Rows[0][0]) != strconv.Itoa(i) {
					t.Fatalf("result %d: %q", i, r.Rows)
				}
			}
		})
	}
}

// slowReader hands out its data after a pause, so that the client sends
// its COPY data after the server has refused the COPY.
type slowReader struct {
	r      *strings.Reader
	waited bool
}

func (s *slowReader) Read(p []byte) (int, error) {
	if !s.waited {
		time.Sleep(100 * time.Millisecond)
		s.waited = true
	}
	return s.r.Read(p)
}

// A COPY the server refuses (no such table) while the client still sends
// its data: the server drops that data, and the next COPY on the session
// works, as it does directly.
func TestCopyDataAfterRefusedCopy(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{pool: `mode = "` + mode + `"`})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := e.connect(t)
			if _, err := c.Exec(ctx, "CREATE TEMPORARY TABLE t (id text PRIMARY KEY, n int NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			_, err := c.PgConn().CopyFrom(ctx, &slowReader{r: strings.NewReader("id\t0\n")}, "COPY nosuchtable FROM STDIN")
			if code := sqlstate(err); code != "42P01" {
				t.Fatalf("COPY into a missing table: %v, want 42P01", err)
			}
			tag, err := c.PgConn().CopyFrom(ctx, &slowReader{r: strings.NewReader("id\t0\n")}, "COPY t FROM STDIN")
			if err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("the next COPY: %v, %v", tag, err)
			}
		})
	}
}
