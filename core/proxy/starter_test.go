package proxy_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
)

// guardPolicy is a session's own policy, as the filters' chain will be:
// it refuses DROP for its session and counts its end.
type guardPolicy struct {
	attrs  engine.SessionAttrs
	closed *atomic.Int32
}

func (g guardPolicy) Decide(st *session.Statement) session.Decision {
	if len(st.Class) > 0 && strings.HasPrefix(st.Class[0].Command, "DROP") {
		return session.Decision{Reject: wire.Errorf("42501", "DROP is not allowed for application %q", g.attrs.ApplicationName)}
	}
	return session.Decision{}
}

func (g guardPolicy) Close() error { g.closed.Add(1); return nil }

// The session seam the filters plug into: a SessionStarter sees each
// authenticated client's attributes, may refuse it with its own SQLSTATE,
// and gives it a per-session Policy, closed when the session ends.
func TestSessionStarter(t *testing.T) {
	var closed atomic.Int32
	var seen atomic.Pointer[engine.SessionAttrs]
	starter := func(listener string, a engine.SessionAttrs) (session.Policy, error) {
		seen.Store(&a)
		if a.ApplicationName == "banned" {
			return nil, wire.Fatalf("28000", "application %q may not connect through listener %q", a.ApplicationName, listener)
		}
		return guardPolicy{attrs: a, closed: &closed}, nil
	}
	e := newEnv(t, envOptions{options: []proxy.Option{proxy.WithSessionStarter(starter)}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c := e.connect(t, "application_name=reports")
	a := seen.Load()
	if a == nil || a.User != appUser || a.Database != "appdb" || a.ApplicationName != "reports" || a.TLS != clientTLS() || !strings.HasPrefix(a.ClientAddr, "127.0.0.1:") {
		t.Fatalf("attributes %+v", a)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "DROP TABLE t"); sqlstate(err) != "42501" || !strings.Contains(err.Error(), `"reports"`) {
		t.Fatalf("DROP through the session's policy: %v, want 42501", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("the session after its policy refused a statement: %v", err)
	}
	c.Close(ctx)
	for deadline := time.Now().Add(5 * time.Second); closed.Load() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("the session's policy was closed %d times at its end, want 1", closed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	if b, err := pgx.Connect(ctx, e.url("application_name=banned")); sqlstate(err) != "28000" {
		if b != nil {
			b.Close(ctx)
		}
		t.Fatalf("a session the starter refuses: %v, want its 28000", err)
	}
}
