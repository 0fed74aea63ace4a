package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// rotatingQuery is the k-th of a set of distinct statements with one
// parameter; it returns the parameter plus k.
func rotatingQuery(k int) string { return fmt.Sprintf("SELECT $1::int + %d", k) }

// runRotating runs rotatingQuery(k) on c with argument arg and checks the
// answer.
func runRotating(ctx context.Context, c *pgx.Conn, k, arg int) error {
	var got int
	if err := c.QueryRow(ctx, rotatingQuery(k), arg).Scan(&got); err != nil {
		return fmt.Errorf("%s with %d: %w", rotatingQuery(k), arg, err)
	}
	if got != arg+k {
		return fmt.Errorf("%s with %d returned %d, want %d", rotatingQuery(k), arg, got, arg+k)
	}
	return nil
}

// TestPreparedStatementsOfManyClients runs pgx clients in its default mode
// (named prepared statements in a per-connection cache, so clients
// running the same text use the same statement name) and in its two
// describe-caching modes through five server connections in transaction
// mode: every answer is right and no client is pinned.
func TestPreparedStatementsOfManyClients(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 5"})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx := context.Background()
			stop := make(chan struct{})
			peak := e.watchServerConns(t, stop)
			const clients, queries, rounds = 200, 50, 3
			runClients(t, clients, func(i int) error {
				return preparedClient(ctx, e, mode, i, queries, rounds)
			})
			close(stop)
			if p := <-peak; p > 5 {
				t.Errorf("PostgreSQL saw %d connections from sluice, want at most 5", p)
			}
		})
	}
}

// preparedClient runs the rotating queries rounds times in mode and checks
// that its session is not pinned.
func preparedClient(ctx context.Context, e *testEnv, mode pgx.QueryExecMode, id, queries, rounds int) error {
	c, err := dial(ctx, e.url(), mode)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for r := 0; r < rounds; r++ {
		for k := 0; k < queries; k++ {
			if err := runRotating(ctx, c, k, id*1000+r); err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
		}
	}
	s, ok := findSession(e, c.PgConn().PID())
	if !ok {
		return fmt.Errorf("Sluice lists no session with process ID %d", c.PgConn().PID())
	}
	if len(s.Pinned) != 0 {
		return fmt.Errorf("session pinned for %q", s.Pinned)
	}
	return nil
}

// serverPreparedStatements counts the prepared statements on the server
// connection a simple-protocol client gets.
func serverPreparedStatements(t *testing.T, e *testEnv) int {
	t.Helper()
	s := e.connectMode(t, pgx.QueryExecModeSimpleProtocol)
	var n int
	if err := s.QueryRow(context.Background(), "SELECT count(*) FROM pg_catalog.pg_prepared_statements").Scan(&n); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	return n
}

// TestPreparedStatementsWithOneServerConnection shares one server
// connection between clients with named prepared statements: more of them
// than Sluice keeps on a server connection, and other clients that clear
// the server connection's statements.
func TestPreparedStatementsWithOneServerConnection(t *testing.T) {
	const limit = 10
	e := newEnv(t, envOptions{pool: "max_connections = 1", pinning: fmt.Sprintf("max_prepared_statements = %d", limit)})
	ctx := context.Background()

	t.Run("more statements than max_prepared_statements", func(t *testing.T) {
		c := e.connectMode(t, pgx.QueryExecModeCacheStatement)
		for r := 0; r < 4; r++ {
			for k := 0; k < 50; k++ {
				if err := runRotating(ctx, c, k, r); err != nil {
					t.Fatalf("round %d: %v", r, err)
				}
			}
		}
		if n := serverPreparedStatements(t, e); n > limit+1 {
			t.Errorf("the server connection holds %d prepared statements, want at most %d", n, limit+1)
		}
		if r := pinnedReasons(t, e, c); len(r) != 0 {
			t.Errorf("session pinned for %q", r)
		}
		c.Close(ctx)
	})

	t.Run("two clients interleaved", func(t *testing.T) {
		a := e.connectMode(t, pgx.QueryExecModeCacheStatement)
		b := e.connectMode(t, pgx.QueryExecModeCacheStatement)
		for r := 0; r < 3; r++ {
			for k := 0; k < 50; k++ {
				if err := runRotating(ctx, a, k, r); err != nil {
					t.Fatalf("client a, round %d: %v", r, err)
				}
				if err := runRotating(ctx, b, 49-k, 100+r); err != nil {
					t.Fatalf("client b, round %d: %v", r, err)
				}
			}
		}
		if n := serverPreparedStatements(t, e); n > limit+1 {
			t.Errorf("the server connection holds %d prepared statements, want at most %d", n, limit+1)
		}
		a.Close(ctx)
		b.Close(ctx)
	})

	for _, tc := range []struct {
		name  string
		clear func(t *testing.T)
	}{
		{"another client's DISCARD ALL", func(t *testing.T) {
			execAll(t, e.connectMode(t, pgx.QueryExecModeSimpleProtocol), "DISCARD ALL")
		}},
		{"another client's DEALLOCATE ALL", func(t *testing.T) {
			execAll(t, e.connectMode(t, pgx.QueryExecModeSimpleProtocol), "DEALLOCATE ALL")
		}},
		{"a pinned client leaving", func(t *testing.T) {
			// Sluice cleans the connection of a pinned client that leaves.
			p := e.connectMode(t, pgx.QueryExecModeSimpleProtocol)
			execAll(t, p, "LISTEN x")
			p.Close(ctx)
		}},
	} {
		t.Run("statements survive "+tc.name, func(t *testing.T) {
			c := e.connectMode(t, pgx.QueryExecModeCacheStatement)
			for round := 0; round < 3; round++ {
				for k := 0; k < 5; k++ {
					if err := runRotating(ctx, c, k, round); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
				}
				tc.clear(t)
			}
			c.Close(ctx)
		})
	}
}

// transcript records what a client sees, to compare Sluice with
// PostgreSQL itself.
type transcript []string

func (tr *transcript) add(format string, args ...any) {
	*tr = append(*tr, fmt.Sprintf(format, args...))
}

// outcome describes an error as the client sees it: PostgreSQL's SQLSTATE
// and message, or that there was none.
func outcome(err error) string {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &pe):
		return fmt.Sprintf("ERROR %s %s", pe.Code, pe.Message)
	default:
		return "client error: " + err.Error()
	}
}

// result records the rows or the error of one statement.
func (tr *transcript) result(label string, r *pgconn.Result) {
	if r.Err != nil {
		tr.add("%s: %s", label, outcome(r.Err))
		return
	}
	var rows []string
	for _, row := range r.Rows {
		var vals []string
		for _, v := range row {
			vals = append(vals, string(v))
		}
		rows = append(rows, "("+strings.Join(vals, ",")+")")
	}
	tr.add("%s: %s rows %s", label, r.CommandTag, strings.Join(rows, " "))
}

// described records a statement description or the error of a Prepare.
func (tr *transcript) described(label string, sd *pgconn.StatementDescription, err error) {
	if err != nil {
		tr.add("%s: %s", label, outcome(err))
		return
	}
	var fields []string
	for _, f := range sd.Fields {
		fields = append(fields, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
	}
	tr.add("%s: params %v fields %s", label, sd.ParamOIDs, strings.Join(fields, ","))
}

// drain records every result of a pipeline until none is left.
func (tr *transcript) drain(p *pgconn.Pipeline) {
	for i := 0; i < 100; i++ {
		res, err := p.GetResults()
		if err != nil {
			tr.add("pipeline: %s", outcome(err))
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				return
			}
			continue
		}
		switch r := res.(type) {
		case nil:
			return
		case *pgconn.StatementDescription:
			tr.described("pipeline prepare "+r.Name, r, nil)
		case *pgconn.ResultReader:
			tr.result("pipeline query", r.Read())
		case *pgconn.PipelineSync:
			tr.add("pipeline sync")
		default:
			tr.add("pipeline %T", r)
		}
	}
	tr.add("pipeline: more than 100 results")
}

// churn has another client run statements of its own, which on a shared
// server connection push the client's statements out of Sluice's limit.
func churn(ctx context.Context, tr *transcript, other *pgx.Conn) {
	for k := 0; k < 6; k++ {
		if err := runRotating(ctx, other, 1000+k, k); err != nil {
			tr.add("the other client: %v", err)
		}
	}
}

// prepScenario is what a client (c, in the mode under test) and another
// client (other, in pgx's default mode) do, recorded in tr.
type prepScenario func(ctx context.Context, tr *transcript, c, other *pgx.Conn)

// sameAsPostgreSQL runs sc once against PostgreSQL itself and once
// through Sluice, where both clients share one server connection, and
// fails the test where the transcripts differ.
func sameAsPostgreSQL(t *testing.T, e *testEnv, mode pgx.QueryExecMode, sc prepScenario) {
	t.Helper()
	ctx := context.Background()
	play := func(url string) (transcript, *pgx.Conn, *pgx.Conn) {
		c, err := dial(ctx, url, mode)
		if err != nil {
			t.Fatal(err)
		}
		other, err := dial(ctx, url, pgx.QueryExecModeCacheStatement)
		if err != nil {
			t.Fatal(err)
		}
		var tr transcript
		sc(ctx, &tr, c, other)
		return tr, c, other
	}
	want, c, other := play(e.directURL())
	c.Close(ctx)
	other.Close(ctx)
	got, c, other := play(e.url())
	if r := pinnedReasons(t, e, c); len(r) != 0 {
		t.Errorf("session pinned for %q", r)
	}
	c.Close(ctx)
	other.Close(ctx)

	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("step %d\n  through Sluice: %s\n  PostgreSQL:     %s", i+1, g, w)
		}
	}
}

// TestPreparedStatementsMatchPostgreSQL checks that named prepared
// statements behave through Sluice, on a server connection shared with
// another client and with room for only three statements, exactly as they
// do on PostgreSQL: the same results, and the same errors at the same
// places.
func TestPreparedStatementsMatchPostgreSQL(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 1", pinning: "max_prepared_statements = 3"})

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run("batch with a failing statement/"+mode.String(), func(t *testing.T) {
			sameAsPostgreSQL(t, e, mode, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
				for attempt := 1; attempt <= 2; attempt++ {
					b := &pgx.Batch{}
					b.Queue("SELECT 1")
					b.Queue("SELECT * FROM no_such_table")
					b.Queue("SELECT 3")
					br := c.SendBatch(ctx, b)
					for i := 1; i <= 3; i++ {
						var v int
						err := br.QueryRow().Scan(&v)
						tr.add("attempt %d query %d: %d %s", attempt, i, v, outcome(err))
					}
					tr.add("attempt %d close: %s", attempt, outcome(br.Close()))
					var v int
					err := c.QueryRow(ctx, "SELECT 4").Scan(&v)
					tr.add("attempt %d afterwards: %d %s", attempt, v, outcome(err))
					churn(ctx, tr, other)
				}
			})
		})
	}

	t.Run("pipeline with a failing Parse", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			pc := c.PgConn()
			p := pc.StartPipeline(ctx)
			p.SendPrepare("ok1", "SELECT 1", nil)
			p.SendPrepare("bad", "SELECT * FROM no_such_table", nil)
			p.SendPrepare("ok3", "SELECT 3", nil)
			p.SendQueryPrepared("ok1", nil, nil, nil)
			p.SendPipelineSync()
			p.SendQueryParams("SELECT 5", nil, nil, nil, nil)
			p.SendQueryPrepared("ok1", nil, nil, nil)
			if err := p.Sync(); err != nil {
				tr.add("sync: %s", outcome(err))
			}
			tr.drain(p)
			tr.add("close: %s", outcome(p.Close()))
			churn(ctx, tr, other)
			for _, name := range []string{"ok1", "bad", "ok3"} {
				tr.result("execute "+name, pc.ExecPrepared(ctx, name, nil, nil, nil).Read())
			}
			sd, err := pc.Prepare(ctx, "ok3", "SELECT 3", nil)
			tr.described("prepare ok3 again", sd, err)
			sd, err = pc.Prepare(ctx, "ok1", "SELECT 1", nil)
			tr.described("prepare ok1 again", sd, err)
			tr.result("execute ok3", pc.ExecPrepared(ctx, "ok3", nil, nil, nil).Read())
		})
	})

	t.Run("a statement whose table is dropped", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			ddl := func(sql string) {
				_, err := other.Exec(ctx, sql)
				tr.add("%s: %s", sql, outcome(err))
			}
			pc := c.PgConn()
			execute := func(label string) { tr.result(label, pc.ExecPrepared(ctx, "q", nil, nil, nil).Read()) }
			ddl("DROP TABLE IF EXISTS t_drop")
			ddl("CREATE TABLE t_drop (a int)")
			ddl("INSERT INTO t_drop VALUES (1)")
			sd, err := pc.Prepare(ctx, "q", "SELECT * FROM t_drop", nil)
			tr.described("prepare q", sd, err)
			execute("execute q")
			churn(ctx, tr, other)
			ddl("DROP TABLE t_drop")
			churn(ctx, tr, other)
			execute("execute q after DROP TABLE")
			tr.result("SELECT 1 afterwards", pc.ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Read())
			// Known difference, as with PgBouncer: had the table come back
			// with another column type, PostgreSQL would refuse q with 0A000
			// (cached plan must not change result type) while Sluice, which
			// prepares q afresh on another connection, would run it.
			ddl("CREATE TABLE t_drop (a int)")
			ddl("INSERT INTO t_drop VALUES (2)")
			churn(ctx, tr, other)
			tr.add("deallocate q: %s", outcome(pc.Deallocate(ctx, "q")))
			sd, err = pc.Prepare(ctx, "q", "SELECT * FROM t_drop", nil)
			tr.described("prepare q again", sd, err)
			execute("execute q")
			ddl("DROP TABLE t_drop")
		})
	})

	t.Run("Deallocate and prepare again under the same name", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			query := func(label string) {
				var v any
				err := c.QueryRow(ctx, "s").Scan(&v)
				tr.add("%s: %v %s", label, v, outcome(err))
			}
			for i, sql := range []string{"SELECT 1::int", "SELECT 'two'::text", "SELECT 3::int"} {
				sd, err := c.Prepare(ctx, "s", sql)
				tr.described(fmt.Sprintf("prepare s #%d", i+1), sd, err)
				query("query s")
				churn(ctx, tr, other)
				query("query s after another client's statements")
				tr.add("deallocate s: %s", outcome(c.Deallocate(ctx, "s")))
				tr.result("execute s after deallocate", c.PgConn().ExecPrepared(ctx, "s", nil, nil, nil).Read())
			}
			// Closing a statement that does not exist is no error.
			tr.add("deallocate never-prepared: %s", outcome(c.PgConn().Deallocate(ctx, "never-prepared")))
		})
	})

	t.Run("the same name in two clients", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			sd, err := other.Prepare(ctx, "s", "SELECT 'other'::text")
			tr.described("other: prepare s", sd, err)
			sd, err = c.Prepare(ctx, "s", "SELECT 1::int")
			tr.described("prepare s", sd, err)
			for i := 0; i < 3; i++ {
				for _, cl := range []struct {
					name string
					conn *pgx.Conn
				}{{"client", c}, {"other", other}} {
					var v any
					err := cl.conn.QueryRow(ctx, "s").Scan(&v)
					tr.add("%s: query s: %v %s", cl.name, v, outcome(err))
				}
			}
		})
	})

	t.Run("errors, DEALLOCATE ALL and DISCARD ALL", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			pc := c.PgConn()
			prepare := func(name, sql string) {
				sd, err := pc.Prepare(ctx, name, sql, nil)
				tr.described("prepare "+name, sd, err)
			}
			execute := func(name string) { tr.result("execute "+name, pc.ExecPrepared(ctx, name, nil, nil, nil).Read()) }
			simple := func(sql string) {
				_, err := pc.Exec(ctx, sql).ReadAll()
				tr.add("%s: %s", sql, outcome(err))
			}
			prepare("a", "SELECT 'a'::text")
			execute("a")
			prepare("a", "SELECT 'a'::text") // 42P05: it exists
			execute("missing")               // 26000
			churn(ctx, tr, other)
			execute("a")
			simple("DEALLOCATE ALL")
			execute("a")
			prepare("a", "SELECT 'a2'::text")
			churn(ctx, tr, other)
			execute("a")
			simple("DISCARD ALL")
			execute("a")
			prepare("a", "SELECT 'a3'::text")
			execute("a")
			prepare("b", "SELECT 'b'::text")
			tr.add("pgx DeallocateAll: %s", outcome(c.DeallocateAll(ctx)))
			execute("a")
			execute("b")
			prepare("b", "SELECT 'b2'::text")
			execute("b")
		})
	})

	// psycopg 3 evicts the statements it prepared with Parse by sending SQL
	// DEALLOCATE name (with libpq before 17).
	t.Run("SQL DEALLOCATE of a protocol-level statement", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			pc := c.PgConn()
			for _, name := range []string{"_pg3_0", "MixedCase"} {
				sd, err := pc.Prepare(ctx, name, "SELECT 'a'::text", nil)
				tr.described("prepare "+name, sd, err)
				churn(ctx, tr, other)
				ident := name
				if name == "MixedCase" {
					ident = `"MixedCase"`
				}
				_, err = pc.Exec(ctx, "DEALLOCATE "+ident).ReadAll()
				tr.add("DEALLOCATE %s: %s", ident, outcome(err))
				tr.result("execute "+name, pc.ExecPrepared(ctx, name, nil, nil, nil).Read())
				sd, err = pc.Prepare(ctx, name, "SELECT 'a2'::text", nil)
				tr.described("prepare "+name+" again", sd, err)
				tr.result("execute "+name, pc.ExecPrepared(ctx, name, nil, nil, nil).Read())
			}
			_, err := pc.Exec(ctx, "BEGIN").ReadAll()
			tr.add("BEGIN: %s", outcome(err))
			_, err = pc.Exec(ctx, "DEALLOCATE PREPARE _pg3_0;").ReadAll()
			tr.add("DEALLOCATE PREPARE inside a transaction: %s", outcome(err))
			_, err = pc.Exec(ctx, "COMMIT").ReadAll()
			tr.add("COMMIT: %s", outcome(err))
			_, err = pc.Exec(ctx, "DEALLOCATE _pg3_0").ReadAll()
			tr.add("DEALLOCATE of a statement that is gone: %s", outcome(err))
		})
	})

	// Known difference: SQL EXECUTE of a statement prepared with the
	// protocol's Parse does not find it through Sluice, which prepares it on
	// the server under its own name.

	t.Run("the unnamed statement across Syncs", func(t *testing.T) {
		sameAsPostgreSQL(t, e, pgx.QueryExecModeCacheStatement, func(ctx context.Context, tr *transcript, c, other *pgx.Conn) {
			pc := c.PgConn()
			sd, err := pc.Prepare(ctx, "", "SELECT 'unnamed'::text", nil)
			tr.described("prepare the unnamed statement", sd, err)
			// A simple query of another client would replace the unnamed
			// statement of a shared server connection.
			_, err = other.Exec(ctx, "SELECT 'other'")
			tr.add("other: simple query: %s", outcome(err))
			tr.result("execute the unnamed statement", pc.ExecPrepared(ctx, "", nil, nil, nil).Read())
		})
	})
}
