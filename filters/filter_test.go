package filters_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk/filtertest"
	"go.uber.org/zap"
)

// Each test guest is compiled once per test binary (and cached on disk).
const (
	kitchen  = "testdata/kitchen"
	garbage  = "testdata/garbage"
	wrongABI = "testdata/wrongabi"
)

// margin is how late past its deadline a failing call may return on a busy
// two-core machine.
const margin = 60 * time.Millisecond

// forSession starts a session of attrs() on c, or fails tb.
func forSession(tb testing.TB, c filters.Chain) *filters.SessionPolicy {
	tb.Helper()
	p, err := c.ForSession(attrs())
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func attrs() filters.SessionAttrs {
	return filters.SessionAttrs{User: "alice", Database: "shop", ApplicationName: "web",
		ClientAddr: "10.0.0.7:5123", Listener: "main", TLS: true}
}

func TestDecisions(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 2})
	s := h.Session(t, attrs())
	defer s.Close()
	for _, tc := range []struct {
		sql  string
		want filters.Decision
	}{
		{"SELECT 1", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleReplica}}}},
		{"UPDATE t SET a = 1", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleWriter}}}},
		{"cluster", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleWriter, Cluster: "analytics"}}}},
		{"pin", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleWriter}, Pin: session.PinForce, PinReason: "kitchen pin"}}},
		{"nopin", filters.Decision{Decision: session.Decision{Pin: session.PinNever}}},
		{"rewrite", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleWriter}}, Rewrite: "SELECT 2", Filter: "kitchen"}},
		{"whoami", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleWriter, Cluster: "alice@shop/web/10.0.0.7:5123/main/tls"}}}},
		{"started", filters.Decision{Decision: session.Decision{Route: session.Route{Role: session.RoleWriter, Cluster: "yes"}}}},
	} {
		if got := s.Query(tc.sql); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: got %+v, want %+v", tc.sql, got, tc.want)
		}
	}
	d := s.Query("reject")
	if d.Reject == nil || d.Reject.Code != "42501" || d.Reject.Message != "kitchen says no" || d.Filter != "kitchen" {
		t.Errorf("reject: got %+v", d)
	}
	// Through session.Policy a rewrite travels in Decision.Rewrite.
	p := forSession(t, filters.Chain{h.Filter})
	defer p.Close()
	st := &session.Statement{SQL: "rewrite", Borrow: true}
	if got := p.Decide(st); got.Reject != nil || got.Rewrite == "" {
		t.Errorf("rewrite through session.Policy: got %+v, want the filter's new text", got)
	}
}

func TestStatementInput(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 1})
	p := forSession(t, filters.Chain{h.Filter})
	defer p.Close()
	// The guest echoes what it was told: "describe" is the text it matches,
	// the classification is what the host encodes.
	class := sqlclass.Classify(nil, "SET search_path = x; LISTEN ch")
	st := &session.Statement{SQL: "describe", Class: class, Extended: true, Borrow: true}
	if got, want := p.DecideStatement(st).Route.Cluster, "SET pin:LISTEN set ext"; got != want {
		t.Errorf("describe: got %q, want %q", got, want)
	}
	class = sqlclass.Classify(nil, "SELECT 1")
	st = &session.Statement{SQL: "describe", Class: class}
	if got, want := p.DecideStatement(st).Route.Cluster, "SELECT ro"; got != want {
		t.Errorf("describe: got %q, want %q", got, want)
	}
}

// The key/value store lives on the host: a value set through one instance
// is read through another, and each session has its own.
func TestSessionStore(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 3})
	a, b := h.Session(t, attrs()), h.Session(t, attrs())
	a.Query("remember east")
	b.Query("remember west")
	for i := range 6 { // round-robin over the pool's instances
		if got := a.Query("recall").Route.Cluster; got != "east" {
			t.Fatalf("call %d: session a recalled %q", i, got)
		}
		if got := b.Query("recall").Route.Cluster; got != "west" {
			t.Fatalf("call %d: session b recalled %q", i, got)
		}
	}
	a.Close()
	b.Close()
	if got := h.Counter("sessions"); got != 2 {
		t.Errorf("sessions counter = %d, want 2", got)
	}
	if got := h.Counter("ended"); got != 2 {
		t.Errorf("ended counter = %d, want 2", got)
	}
	if got := h.Counter("statements"); got != 0 {
		t.Errorf("statements counter = %d, want 0", got)
	}
}

func TestLog(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 1})
	s := h.Session(t, attrs())
	defer s.Close()
	s.Query("log")
	for _, e := range h.Logs() {
		if e.Message == "hello from kitchen" && e.ContextMap()["filter"] == "kitchen" {
			return
		}
	}
	t.Errorf("no log entry from the filter with its name: %v", h.Logs())
}

func TestConfigureRejects(t *testing.T) {
	p := filtertest.Build(t, kitchen)
	_, err := filters.Load(context.Background(), filters.Config{Name: "k", Module: p, Config: []byte(`{"Reject": true}`)}, nil)
	if !errors.Is(err, filters.ErrConfigRejected) || !strings.Contains(err.Error(), "kitchen refuses") {
		t.Errorf("Load: %v, want the filter's rejection", err)
	}
}

func TestWrongABI(t *testing.T) {
	p := filtertest.Build(t, wrongABI)
	_, err := filters.Load(context.Background(), filters.Config{Name: "w", Module: p}, nil)
	if !errors.Is(err, filters.ErrABI) || !strings.Contains(err.Error(), "sluice_abi_v9") {
		t.Errorf("Load: %v, want ErrABI naming sluice_abi_v9", err)
	}
}

// TestFaults: a filter that loops, allocates without bound, panics, exits
// or answers garbage is answered by its failure policy within its deadline,
// and the next statement is served normally by another instance.
func TestFaults(t *testing.T) {
	const timeout = 25 * time.Millisecond // generous: make test runs this under -race on a busy machine
	for _, policy := range []string{filters.FailSafe, filters.FailClosed} {
		for _, tc := range []struct{ guest, sql string }{
			{kitchen, "loop"}, {kitchen, "alloc"}, {kitchen, "panic"}, {kitchen, "exit"},
			{garbage, "garbage"}, {garbage, "outside"},
		} {
			t.Run(policy+"/"+tc.sql, func(t *testing.T) {
				h := filtertest.Load(t, tc.guest, filtertest.Options{
					FailurePolicy: policy, Timeout: timeout, Instances: 2, MemoryLimit: 16 << 20})
				s := h.Session(t, attrs())
				defer s.Close()
				start := time.Now()
				d := s.Query(tc.sql)
				if el := time.Since(start); el > filters.KillAfter(timeout)+margin {
					t.Errorf("the failing call took %v", el)
				}
				switch policy {
				case filters.FailSafe:
					if d.Route.Role != session.RoleWriter || d.Reject != nil || d.Rewrite != "" || d.Pin != session.PinKeep {
						t.Errorf("fail_safe: got %+v, want writer only", d)
					}
				case filters.FailClosed:
					if d.Reject == nil || d.Reject.Code != "58000" || !strings.Contains(d.Reject.Message, `"`+lastElem(tc.guest)+`"`) {
						t.Errorf("fail_closed: got %+v, want 58000 naming the filter", d)
					}
				}
				if got := h.Filter.Stats(); got.Failures != 1 || got.Replaced != 1 {
					t.Errorf("stats %+v, want one failure and one replaced instance", got)
				}
				for i := range 4 { // the healthy instance, then the replacement
					if d := s.Query("SELECT 1"); d.Route.Role != session.RoleReplica || d.Reject != nil {
						t.Fatalf("call %d after the fault: %+v", i, d)
					}
				}
			})
		}
	}
}

func lastElem(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// TestBreaker: a filter failing again and again, for more than one
// session, is skipped, logged, and every skipped call is answered at once;
// one session's failures alone do not open it.
func TestBreaker(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{FailurePolicy: filters.FailClosed, Instances: 2})
	s, other := h.Session(t, attrs()), h.Session(t, attrs())
	defer s.Close()
	defer other.Close()
	for range 8 {
		s.Query("panic")
	}
	if h.Logged("keeps failing") {
		t.Fatal("one session's failures opened the breaker")
	}
	// A call that finds no instance free (both being replaced) is not the
	// filter's fault and does not feed the breaker: panic until it trips.
	for i := 0; i < 50 && !h.Logged("keeps failing"); i++ {
		[]*filtertest.Session{other, s}[i%2].Query("panic")
	}
	if !h.Logged("keeps failing") {
		t.Fatalf("no breaker log after 50 panics from two sessions: %v", h.Logs())
	}
	start := time.Now()
	d := s.Query("SELECT 1")
	if d.Reject == nil || d.Reject.Code != "58000" || !errors.Is(d.Reject.Err, filters.ErrTripped) {
		t.Errorf("while open: got %+v, want 58000 for an open breaker", d)
	}
	if el := time.Since(start); el > time.Millisecond {
		t.Errorf("a skipped call took %v", el)
	}
	if got := h.Filter.Stats().Trips; got != 1 {
		t.Errorf("trips = %d, want 1", got)
	}
}

// TestSlowReplacement: while the only instance, killed by one session's
// statement, is being replaced (slower than a call's deadline, as under the
// race detector on a loaded machine), another session's call waits for the
// replacement instead of failing.
func TestSlowReplacement(t *testing.T) {
	const timeout = 10 * time.Millisecond
	h := filtertest.Load(t, kitchen, filtertest.Options{FailurePolicy: filters.FailClosed, Instances: 1, Timeout: timeout})
	slow := 20 * filters.KillAfter(timeout)
	filters.SlowReplacement(h.Filter, slow)
	bad, other := h.Session(t, attrs()), h.Session(t, attrs())
	defer bad.Close()
	defer other.Close()
	if d := bad.Query("panic"); d.Reject == nil || d.Reject.Code != "58000" {
		t.Fatalf("panic: %+v, want 58000", d)
	}
	start := time.Now()
	if d := other.Query("SELECT 1"); d.Route.Role != session.RoleReplica || d.Reject != nil {
		t.Fatalf("another session, while the instance is replaced: %+v", d)
	}
	if el := time.Since(start); el < slow/2 {
		t.Errorf("answered after %v: the replacement (%v) was not waited for", el, slow)
	}
}

// TestConcurrent: sessions on many goroutines share the pool, and a
// faulting statement on one does not disturb the others.
func TestConcurrent(t *testing.T) {
	h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 2, Timeout: 20 * time.Millisecond})
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			s := h.Session(t, attrs())
			defer s.Close()
			for i := range 200 {
				if g == 0 && i == 100 {
					s.Query("panic")
					continue
				}
				if d := s.Query("SELECT 1"); d.Route.Role != session.RoleReplica {
					errs <- fmt.Errorf("goroutine %d call %d: %+v", g, i, d)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestClose(t *testing.T) {
	p := filtertest.Build(t, kitchen)
	before := runtime.NumGoroutine()
	f, err := filters.Load(context.Background(), filters.Config{Name: "k", Module: p, Instances: 1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s := forSession(t, filters.Chain{f})
	s.Decide(&session.Statement{SQL: "panic"}) // leaves a replacement under way
	s.Close()
	f.Close()
	f.Close()
	d := forSession(t, filters.Chain{f}).DecideStatement(&session.Statement{SQL: "SELECT 1"})
	if d.Route.Role != session.RoleWriter {
		t.Errorf("after Close: %+v, want the fail_safe writer", d)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

// BenchmarkStatement measures one statement hook call of a real filter,
// deadline machinery included, and reports its median and p99.
func BenchmarkStatement(b *testing.B) {
	h := filtertest.Load(b, "../examples/filters/readwrite", filtertest.Options{Instances: 1})
	p := forSession(b, filters.Chain{h.Filter})
	defer p.Close()
	sql := "SELECT id, name FROM users WHERE id = $1"
	st := &session.Statement{SQL: sql, Class: sqlclass.Classify(nil, sql), Borrow: true}
	times := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		d := p.Decide(st)
		times = append(times, time.Since(start))
		if d.Route.Role != session.RoleReplica && h.Filter.Stats().Failures == 0 {
			b.Fatalf("decision %+v, stats %+v, logs %v", d, h.Filter.Stats(), h.Logs())
		}
	}
	b.StopTimer()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Nanoseconds()), "median-ns")
	b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds()), "p99-ns")
	// A call that missed its deadline (the machine was busy) is counted,
	// not fatal: the figures are what a proxy would have seen.
	b.ReportMetric(float64(h.Filter.Stats().Failures), "failures")
	b.ReportMetric(float64(h.Filter.HookStats(filters.HookStatement).Late), "late")
}

// BenchmarkStatementBetweenReads measures what a statement hook call costs
// a proxy whose goroutine waits on a socket between statements (as a
// session does): process CPU per loopback round trip with a call, minus
// the same without. In a tight loop (BenchmarkStatement) the call is far
// cheaper: here wazero's per-call watcher goroutine (WithCloseOnContextDone)
// wakes an idle P each time.
func BenchmarkStatementBetweenReads(b *testing.B) {
	h := filtertest.Load(b, "../examples/filters/readwrite", filtertest.Options{Instances: 1})
	p := forSession(b, filters.Chain{h.Filter})
	defer p.Close()
	sql := "SELECT id, name FROM users WHERE id = $1"
	st := &session.Statement{SQL: sql, Class: sqlclass.Classify(nil, sql), Borrow: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			c.Write(buf)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	roundTrips := func(n int, call bool) time.Duration {
		c0 := processCPU()
		for range n {
			if call {
				p.Decide(st)
			}
			c.Write(buf)
			c.Read(buf)
		}
		return processCPU() - c0
	}
	b.ResetTimer()
	with := roundTrips(b.N, true)
	without := roundTrips(b.N, false)
	b.ReportMetric(float64(with.Nanoseconds())/float64(b.N), "cpu-ns/rt-with-call")
	b.ReportMetric(float64((with-without).Nanoseconds())/float64(b.N), "cpu-ns/call")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A lone call with a timeout longer than the watchdog's idle window (a
// second without a call started) is still stopped: the watchdog stays
// awake while a call is in flight. It used to fall asleep under such a
// call, which then spun on until another call woke it.
func TestLongTimeoutLoneCallStopped(t *testing.T) {
	const timeout = 800 * time.Millisecond // killed at KillAfter: 1.6 s
	h := filtertest.Load(t, kitchen, filtertest.Options{FailurePolicy: filters.FailClosed, Timeout: timeout, Instances: 1})
	s := h.Session(t, attrs())
	defer s.Close()
	done := make(chan filters.Decision, 1)
	start := time.Now()
	go func() { done <- s.Query("loop") }()
	select {
	case d := <-done:
		if d.Reject == nil || d.Reject.Code != "58000" {
			t.Errorf("got %+v, want fail_closed's 58000", d)
		}
		if el := time.Since(start); el < timeout {
			t.Errorf("stopped after %v, before its timeout %v", el, timeout)
		}
	case <-time.After(filters.KillAfter(timeout) + 10*time.Second):
		t.Fatal("the call was never stopped")
	}
}
