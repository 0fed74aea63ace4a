// Package filtertest runs a Sluice filter for real in tests: it compiles the
// filter's Go source to WebAssembly with the stock toolchain, loads it with
// Sluice's own host (package filters, on wazero) and feeds it sessions and
// statements classified by Sluice's classifier, so that a test asserts the
// decisions, logs and counters a proxy would see.
package filtertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/filters"
)

// Options configure Load. The zero Options load the filter with the
// host's defaults, named after its directory.
type Options struct {
	Name          string
	Config        []byte // the filter's JSON configuration
	FailurePolicy string // filters.FailSafe (default) or filters.FailClosed
	Timeout       time.Duration
	Instances     int
	MemoryLimit   int64
	RealClock     bool // give the filter the wall clock (real_clock = true)
	// CacheDir is where builds are kept ("" for the user's cache directory).
	CacheDir string
}

// Harness is a loaded filter and what it logged. It is safe for concurrent
// use, as the filter is; its Sessions are not.
type Harness struct {
	Filter *filters.Filter
	logs   *observer.ObservedLogs
}

// Build compiles the filter in dir (see BuildModule) or fails tb.
func Build(tb testing.TB, dir string) string {
	tb.Helper()
	p, err := buildOnce(dir, "")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

var builds sync.Map // dir -> *buildResult: one build per directory and test binary

type buildResult struct {
	once sync.Once
	path string
	err  error
}

func buildOnce(dir, cacheDir string) (string, error) {
	r, _ := builds.LoadOrStore(dir+"\x00"+cacheDir, &buildResult{})
	b := r.(*buildResult)
	b.once.Do(func() { b.path, b.err = BuildModule(dir, cacheDir) })
	return b.path, b.err
}

// Load builds the filter in dir and loads it; the filter is closed when the
// test ends.
func Load(tb testing.TB, dir string, opts Options) *Harness {
	tb.Helper()
	p, err := buildOnce(dir, opts.CacheDir)
	if err != nil {
		tb.Fatal(err)
	}
	if opts.Name == "" {
		opts.Name = lastElem(dir)
	}
	h, err := LoadModule(p, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Filter.Close)
	return h
}

// LoadModule loads a compiled module; the caller must Close h.Filter.
func LoadModule(path string, opts Options) (*Harness, error) {
	core, logs := observer.New(zap.DebugLevel)
	f, err := filters.Load(context.Background(), filters.Config{
		Name: opts.Name, Module: path, FailurePolicy: opts.FailurePolicy, Timeout: opts.Timeout,
		Instances: opts.Instances, MemoryLimit: opts.MemoryLimit, RealClock: opts.RealClock, Config: opts.Config,
		CacheDir: compileCacheDir(opts.CacheDir),
	}, zap.New(core))
	if err != nil {
		return nil, err
	}
	return &Harness{Filter: f, logs: logs}, nil
}

func lastElem(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Base(dir)
}

// Logs returns what the filter logged so far, with the host's own entries
// about it (failures, breaker).
func (h *Harness) Logs() []observer.LoggedEntry { return h.logs.All() }

// Logged reports whether some entry's message contains text.
func (h *Harness) Logged(text string) bool {
	return h.logs.FilterMessageSnippet(text).Len() > 0
}

// Counter returns the filter's counter called name.
func (h *Harness) Counter(name string) int64 { return h.Filter.Counters()[name] }

// Session starts a client session with attrs, or fails tb when the
// filter refuses it (see Start).
func (h *Harness) Session(tb testing.TB, attrs filters.SessionAttrs) *Session {
	tb.Helper()
	s, err := h.Start(attrs)
	if err != nil {
		tb.Fatalf("the filter refused the session: %v", err)
	}
	return s
}

// Start starts a client session with attrs; the error is the filter's
// refusal (a *wire.Error with its SQLSTATE), as the client would get it.
func (h *Harness) Start(attrs filters.SessionAttrs) (*Session, error) {
	p, err := filters.Chain{h.Filter}.ForSession(attrs)
	if err != nil {
		return nil, err
	}
	return &Session{p: p}, nil
}

// Session is one client session. It follows transactions as a proxy would
// (see filters.InTransactionAfter): after BEGIN the session is in a
// transaction until COMMIT or ROLLBACK.
// Not safe for concurrent use. Close ends it.
type Session struct {
	p    *filters.SessionPolicy
	inTx bool
}

// Query decides a simple Query's text.
func (s *Session) Query(sql string) filters.Decision { return s.statement(sql, false) }

// Prepared decides the text of a statement sent with the extended protocol.
func (s *Session) Prepared(sql string) filters.Decision { return s.statement(sql, true) }

func (s *Session) statement(sql string, extended bool) filters.Decision {
	st := filters.NewStatement(sql, s.inTx, extended)
	d := s.Decide(&st)
	if d.Reject == nil {
		if d.Rewrite != "" {
			sql = d.Rewrite // what the server runs
		}
		s.inTx = filters.InTransactionAfter(sql, s.inTx)
	}
	return d
}

// Decide decides a statement built by the test.
func (s *Session) Decide(st *session.Statement) filters.Decision { return s.p.DecideStatement(st) }

// Cluster is the cluster the filter chose for the session when it started
// ("" for the listener's).
func (s *Session) Cluster() string { return s.p.SessionRoute().Cluster }

// Close ends the session.
func (s *Session) Close() { _ = s.p.Close() }

// Survive feeds the filter n generated statements (a mix of reads, writes,
// transactions, SET, comments, odd bytes and long texts) over a few
// sessions, and fails tb if any call fails (traps, is stopped, answers
// garbage) or takes longer than it may before it is stopped
// (filters.KillAfter of the timeout) plus a margin.
func (h *Harness) Survive(tb testing.TB, n int, seed uint64) {
	tb.Helper()
	before := h.Filter.Stats()
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	limit := filters.KillAfter(h.Filter.Timeout()) + 50*time.Millisecond
	var s *Session
	for i := range n {
		if i%50 == 0 {
			if s != nil {
				s.Close()
			}
			var err error
			s, err = h.Start(filters.SessionAttrs{User: "u" + fmt.Sprint(i), Database: "db", ClientAddr: "10.0.0.1:5000"})
			if err != nil {
				tb.Fatalf("session %d: the filter refused it: %v", i/50, err)
			}
		}
		sql := generate(r)
		start := time.Now()
		d := s.statement(sql, r.IntN(3) == 0)
		if el := time.Since(start); el > limit {
			tb.Fatalf("statement %d (%.40q) took %v", i, sql, el)
		}
		if d.Reject != nil && d.Reject.Code == filters.CodeFilterFailed {
			tb.Fatalf("statement %d (%.40q): the filter failed: %v", i, sql, d.Reject.Err)
		}
	}
	s.Close()
	if after := h.Filter.Stats(); after.Failures != before.Failures {
		tb.Fatalf("the filter failed %d times over %d statements; logs: %v",
			after.Failures-before.Failures, n, h.Logs())
	}
}

var pieces = []string{
	"SELECT 1", "select * from t where id = $1", "INSERT INTO t VALUES (1)", "UPDATE t SET a = 2",
	"DELETE FROM t", "BEGIN", "BEGIN READ ONLY", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
	"COMMIT", "ROLLBACK", "SET search_path = public", "RESET ALL", "LISTEN x", "DISCARD ALL",
	"/* sluice:writer */ SELECT 1", "-- comment\nSELECT 2", "WITH a AS (SELECT 1) SELECT * FROM a",
	"SELECT nextval('s')", "SELECT * FROM t FOR UPDATE", "CREATE TEMP TABLE x (a int)",
	"EXPLAIN ANALYZE SELECT 1", "", ";", "'unterminated", "SELECT $$ dollar $$", "\x00\xff\xfe",
}

func generate(r *rand.Rand) string {
	var b strings.Builder
	for k := 1 + r.IntN(3); k > 0; k-- {
		b.WriteString(pieces[r.IntN(len(pieces))])
		b.WriteString("; ")
	}
	switch r.IntN(20) {
	case 0: // long text
		b.WriteString("SELECT '")
		b.WriteString(strings.Repeat("x", 100_000+r.IntN(200_000)))
		b.WriteString("'")
	case 1: // random bytes
		for k := r.IntN(200); k > 0; k-- {
			b.WriteByte(byte(r.UintN(256)))
		}
	}
	return b.String()
}

// compileCacheDir is where wazero keeps compiled modules for tests.
func compileCacheDir(cacheDir string) string {
	if cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cacheDir = filepath.Join(base, "sluice-filtertest")
	}
	return filepath.Join(cacheDir, "wazero")
}

// READMEConfig parses the first ```hcl block of the file readme (a
// filter's README) as a Sluice filter block, with its module replaced by
// module, inside a minimal configuration, and returns the block as Sluice
// reads it: a test that loads the filter with it keeps the documented
// example true.
func READMEConfig(tb testing.TB, readme, module string) config.Filter {
	tb.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		tb.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindSubmatch(b)
	if m == nil {
		tb.Fatalf("%s has no ```hcl block", readme)
	}
	block := regexp.MustCompile(`module\s*=\s*"[^"]*"`).ReplaceAllString(string(m[1]), `module = "`+module+`"`)
	src := `listen "main" { address = "127.0.0.1:6432"  cluster = "main" }
cluster "main" { writer = "127.0.0.1:15432" }
auth { user "app" { password = "secret" } }
` + block
	cfg, err := config.Parse([]byte(src), nil)
	if err != nil {
		tb.Fatalf("the block in %s does not parse: %v\n%s", readme, err, block)
	}
	if len(cfg.Filters) != 1 {
		tb.Fatalf("the block in %s: %d filters, want 1", readme, len(cfg.Filters))
	}
	return cfg.Filters[0]
}
