package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestLoopTLSClients: TLS clients run on the event loop once logged in, as
// plaintext ones do (no goroutine of their own while idle), and what
// crosses the loop in TLS records arrives whole both ways: results and
// statements far larger than one record, COPY in both directions, from
// clients working at once over two server connections.
func TestLoopTLSClients(t *testing.T) {
	cert, key := writeCert(t)
	e := newEnv(t, envOptions{
		loops:  1,
		pool:   "max_connections = 2",
		listen: "tls {\n    cert_file = \"" + cert + "\"\n    key_file  = \"" + key + "\"\n  }",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := goroutinesIn(sessionServeFrame)
	const clients = 12
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		c, err := pgx.Connect(ctx, strings.Replace(e.url(), "sslmode=disable", "sslmode=require", 1))
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
			t.Fatalf("client %d is %T, not TLS", i, c.PgConn().Conn())
		}
		conns[i] = c
	}
	// Logged in and idle: every session is on the loop.
	awaitGoroutines(t, "idle TLS clients", sessionServeFrame, base, 0)

	if _, err := conns[0].Exec(ctx, "CREATE TABLE tls_copy (i int, s text)"); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("abcdefghij", 100_000) // 1 MB, 60-odd TLS records
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- tlsWorkload(ctx, c, i, big)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var rows int
	if err := conns[0].QueryRow(ctx, "SELECT count(*) FROM tls_copy").Scan(&rows); err != nil || rows != clients*2000 {
		t.Errorf("COPY FROM over TLS: %d rows (%v), want %d", rows, err, clients*2000)
	}
	awaitGoroutines(t, "TLS clients after their work", sessionServeFrame, base, 0)
}

// tlsWorkload runs client i's statements and checks every answer.
func tlsWorkload(ctx context.Context, c *pgx.Conn, i int, big string) error {
	// A 1 MB literal in a simple Query, and the same as a bound parameter.
	var n int
	if err := c.QueryRow(ctx, "SELECT length('"+big+"')", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != len(big) {
		return fmt.Errorf("client %d: 1 MB literal: length %d, %v", i, n, err)
	}
	if err := c.QueryRow(ctx, "SELECT length($1::text)", big).Scan(&n); err != nil || n != len(big) {
		return fmt.Errorf("client %d: 1 MB parameter: length %d, %v", i, n, err)
	}
	// A 4 MB result, row by row, checked against the server's own digest.
	rows, err := c.Query(ctx, "SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4000) g")
	if err != nil {
		return fmt.Errorf("client %d: big result: %v", i, err)
	}
	h := sha256.New()
	count := 0
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		io.WriteString(h, s)
		count++
	}
	if err := rows.Err(); err != nil || count != 4000 {
		return fmt.Errorf("client %d: big result: %d rows, %v", i, count, err)
	}
	var want []byte
	if err := c.QueryRow(ctx, "SELECT sha256(convert_to(string_agg(repeat(md5(g::text), 32), '' ORDER BY g), 'UTF8')) FROM generate_series(1, 4000) g").Scan(&want); err != nil {
		return err
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("client %d: the 4 MB result arrived altered", i)
	}
	// COPY in, inside a transaction, then COPY out of what this client wrote.
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	src := make([][]any, 2000)
	for r := range src {
		src[r] = []any{i, strings.Repeat("y", 500)}
	}
	if n, err := tx.CopyFrom(ctx, pgx.Identifier{"tls_copy"}, []string{"i", "s"}, pgx.CopyFromRows(src)); err != nil || n != 2000 {
		return fmt.Errorf("client %d: COPY FROM: %d rows, %v", i, n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	var out bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &out, fmt.Sprintf("COPY (SELECT s FROM tls_copy WHERE i = %d) TO STDOUT", i))
	if err != nil || tag.RowsAffected() != 2000 || out.Len() != 2000*501 {
		return fmt.Errorf("client %d: COPY TO: %d rows, %d bytes, %v", i, tag.RowsAffected(), out.Len(), err)
	}
	return nil
}
