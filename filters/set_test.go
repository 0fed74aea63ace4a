package filters_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk/filtertest"
)

const readwrite = "../examples/filters/readwrite"

// copyModule copies the built module of dir to path (atomically, as a
// deploy would: write beside it, then rename).
func copyModule(t *testing.T, dir, path string) {
	t.Helper()
	b, err := os.ReadFile(filtertest.Build(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func stmt(sql string, borrow bool) *session.Statement {
	return &session.Statement{SQL: sql, Class: sqlclass.Classify(nil, sql), Borrow: borrow, InTransaction: !borrow}
}

// The session-start hook may refuse a session (FATAL with the filter's
// SQLSTATE) or choose its cluster; any other answer is a failure.
func TestSessionStartDecisions(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 1})
	a := attrs()
	a.User = "stranger"
	_, err := h.Start(a)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != "28000" || we.Message != "kitchen does not know you" || !we.Fatal() {
		t.Fatalf("stranger: got %v, want FATAL 28000 from the filter", err)
	}
	a = attrs()
	a.ApplicationName = "cluster:eu"
	s := h.Session(t, a)
	if got := s.Cluster(); got != "eu" {
		t.Errorf("session cluster = %q, want eu", got)
	}
	if got := s.Query("UPDATE t SET a = 1").Route; got.Cluster != "eu" || got.Role != session.RoleWriter {
		t.Errorf("statement route %+v, want the writer of eu", got)
	}
	s.Close()
	before := h.Filter.Stats().Failures
	a.ApplicationName = "writer-at-start"
	s = h.Session(t, a) // accepted: the failure policy answers at the first statement
	if got := h.Filter.Stats().Failures - before; got != 1 {
		t.Errorf("a writer route at session start: %d failures, want 1", got)
	}
	s.Close()
}

// A route inside a transaction that its server cannot serve is ignored,
// reported in the decision and logged once per transaction.
func TestRouteConflictInTransaction(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 1})
	p := forSession(t, filters.Chain{h.Filter})
	defer p.Close()
	if d := p.DecideStatement(stmt("BEGIN", true)); d.Route.Role != session.RoleWriter || d.Conflict != "" {
		t.Fatalf("BEGIN: %+v", d)
	}
	d := p.DecideStatement(stmt("cluster", false)) // kitchen routes "cluster" to analytics
	if d.Conflict != "kitchen" || d.Route.Cluster != "" {
		t.Errorf("in transaction: %+v, want a conflict and no route", d)
	}
	p.DecideStatement(stmt("cluster", false))
	if d := p.DecideStatement(stmt("UPDATE t SET a = 1", false)); d.Conflict != "" {
		t.Errorf("a writer route in a writer transaction is no conflict: %+v", d)
	}
	if n := countLogs(h, "inside a transaction"); n != 1 {
		t.Errorf("%d conflict logs, want 1 per transaction", n)
	}
	if d := p.DecideStatement(stmt("cluster", true)); d.Conflict != "" || d.Route.Cluster != "analytics" {
		t.Errorf("at a borrow: %+v, want the route", d)
	}
}

func countLogs(h *filtertest.Harness, text string) int {
	n := 0
	for _, e := range h.Logs() {
		if strings.Contains(e.Message, text) {
			n++
		}
	}
	return n
}

// A reload swaps the chain for new sessions and for running sessions at
// their next borrow; a transaction keeps its version; the store survives;
// the old version closes once no session holds it; metrics accumulate.
func TestSetReload(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "f.wasm")
	copyModule(t, kitchen, mod)
	core, logs := observer.New(zap.InfoLevel)
	cfg := []filters.Config{{Name: "f", Module: mod, Instances: 1, CacheDir: filepath.Join(dir, "cache")}}
	set, err := filters.NewSet(context.Background(), cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	p, err := set.ForSession(attrs())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.DecideStatement(stmt("remember east", true))
	p.DecideStatement(stmt("BEGIN", true))
	old := set.Chain()[0]

	copyModule(t, readwrite, mod) // readwrite sends "cluster" (not read-only) to the writer
	if !set.Changed() {
		t.Fatal("the module file changed but Changed says no")
	}
	if tried, err := set.ReloadChanged(context.Background()); !tried || err != nil {
		t.Fatalf("ReloadChanged: %v %v", tried, err)
	}
	if set.Generation() != 2 {
		t.Fatalf("generation %d, want 2", set.Generation())
	}
	// The open transaction stays on kitchen: "recall" answers from the store.
	if got := p.DecideStatement(stmt("recall", false)); got.Conflict == "" {
		t.Errorf("in the transaction begun on the old version: %+v, want kitchen's route (a conflict)", got)
	}
	// At its next borrow the session moves to readwrite.
	if got := p.DecideStatement(stmt("cluster", true)).Route; got.Cluster != "" || got.Role != session.RoleWriter {
		t.Errorf("after the borrow: %+v, want readwrite's writer", got)
	}
	// The old version is closed now that no session holds it.
	waitFor(t, func() bool { return closed(old) })
	q, err := set.ForSession(attrs())
	if err != nil {
		t.Fatal(err)
	}
	if got := q.DecideStatement(stmt("SELECT 1", true)).Route.Role; got != session.RoleReplica {
		t.Errorf("a new session: %v, want readwrite's replica", got)
	}
	q.Close()
	if got := set.Chain()[0].HookStats(filters.HookStatement).Calls; got < 5 {
		t.Errorf("statement calls over both versions = %d, want at least 5", got)
	}
	if logs.FilterMessage("filters reloaded").Len() != 1 {
		t.Errorf("no reload logged: %v", logs.All())
	}
}

// A module that does not load is refused and the running chain serves on;
// the same broken file is not retried until it changes again.
func TestSetReloadRefusesBrokenModule(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "f.wasm")
	copyModule(t, readwrite, mod)
	cfg := []filters.Config{{Name: "f", Module: mod, Instances: 1}}
	set, err := filters.NewSet(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for _, broken := range [][]byte{[]byte("not wasm at all"), nil} {
		if broken == nil {
			copyModule(t, wrongABI, mod)
		} else if err := os.WriteFile(mod, broken, 0o644); err != nil {
			t.Fatal(err)
		}
		tried, err := set.ReloadChanged(context.Background())
		if !tried || !errors.Is(err, filters.ErrReload) {
			t.Fatalf("broken module: tried %v, err %v; want ErrReload", tried, err)
		}
		if tried, _ := set.ReloadChanged(context.Background()); tried {
			t.Error("the same broken file was tried again")
		}
		if set.Generation() != 1 {
			t.Fatalf("generation %d after a failed reload", set.Generation())
		}
		p, err := set.ForSession(attrs())
		if err != nil {
			t.Fatal(err)
		}
		if got := p.DecideStatement(stmt("SELECT 1", true)).Route.Role; got != session.RoleReplica {
			t.Errorf("the old version should still serve: %v", got)
		}
		p.Close()
	}
}

func closed(f *filters.Filter) bool {
	p, err := filters.Chain{f}.ForSession(attrs())
	if err != nil {
		return false
	}
	defer p.Close()
	p.DecideStatement(stmt("SELECT 1", true))
	return f.Stats().Failures > 0 // a closed filter fails every call
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The wall clock is the epoch unless the filter block asks for the real one.
func TestRealClock(t *testing.T) {
	for _, real := range []bool{false, true} {
		h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 1, RealClock: real})
		s := h.Session(t, attrs())
		want := "1970"
		if real {
			want = time.Now().Format("2006")
		}
		if got := s.Query("year").Route.Cluster; got != want {
			t.Errorf("real_clock %v: the filter's year is %s, want %s", real, got, want)
		}
		s.Close()
	}
}

// The host calls only the hooks a Go filter implements (sluice_hooks),
// although the SDK exports them all.
func TestOnlyImplementedHooksAreCalled(t *testing.T) {
	for _, tc := range []struct {
		dir        string
		startCalls int64
	}{{readwrite, 0}, {kitchen, 1}} {
		h := filtertest.Load(t, tc.dir, filtertest.Options{Instances: 1})
		s := h.Session(t, attrs())
		s.Query("SELECT 1")
		s.Close()
		if got := h.Filter.HookStats(filters.HookSessionStart).Calls; got != tc.startCalls {
			t.Errorf("%s: %d session-start calls, want %d", tc.dir, got, tc.startCalls)
		}
		if got := h.Filter.HookStats(filters.HookStatement).Calls; got != 1 {
			t.Errorf("%s: %d statement calls, want 1", tc.dir, got)
		}
	}
}
