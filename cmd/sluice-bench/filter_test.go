package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/core/config"
)

func TestFilterFlagAddsTheTarget(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"-filter"}, []string{"direct", "pgbouncer", "sluice", "sluice-goroutine", "sluice+readwrite"}},
		{[]string{"-reader", "-filter"}, []string{"direct", "pgbouncer", "sluice", "sluice-goroutine", "reader", "sluice+readwrite"}},
		{nil, []string{"direct", "pgbouncer", "sluice", "sluice-goroutine"}},
	} {
		o, err := parseFlags(tt.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(o.targets, tt.want) {
			t.Errorf("targets with %q = %v, want %v", tt.args, o.targets, tt.want)
		}
	}
}

func TestFilterConfig(t *testing.T) {
	module := filepath.Join(t.TempDir(), "readwrite.wasm")
	if err := os.WriteFile(module, []byte("\x00asm"), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := sluiceSetup{port: 7000, pgAddr: "127.0.0.1:5000", poolSize: 20}
	filtered := plain
	filtered.filterModule = module
	want, err := config.Parse([]byte(plain.configHCL()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, plain.configHCL())
	}
	got, err := config.Parse([]byte(filtered.configHCL()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, filtered.configHCL())
	}
	if len(got.Filters) != 1 {
		t.Fatalf("filters = %+v, want one", got.Filters)
	}
	f := got.Filters[0]
	if f.Name != "readwrite" || f.Module != module || f.Timeout != config.DefaultFilterTimeout || f.FailurePolicy != config.FailSafe {
		t.Errorf("filter = %+v, want readwrite at %s with the default timeout and fail_safe", f, module)
	}
	c := got.Clusters["main"]
	if c.ReaderFallback != config.FallbackWriter || len(c.Replicas) != 0 || c.Writer != "127.0.0.1:5000" {
		t.Errorf("cluster = %+v, want writer 127.0.0.1:5000, no replica, reader_fallback writer", c)
	}
	// Everything else is the sluice target's configuration.
	c.ReaderFallback = want.Clusters["main"].ReaderFallback
	got.Clusters["main"] = c
	got.Filters = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("with the filter the configuration differs in more than the filter and reader_fallback:\n%+v\nwant\n%+v", got, want)
	}
}

// goTestOutput is what `go test -bench BenchmarkStatement` prints.
const goTestOutput = `goos: linux
goarch: amd64
pkg: github.com/sluicedb/sluice/filters
cpu: AMD EPYC
BenchmarkStatement-2   	  200000	      4120 ns/op	         3.000 failures	         7.000 late	      2911 median-ns	     48211 p99-ns	       0 B/op	       0 allocs/op
PASS
ok  	github.com/sluicedb/sluice/filters	1.402s
`

func TestParseHookBenchmark(t *testing.T) {
	r, err := parseHookBenchmark(goTestOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := hookResult{
		line:       "BenchmarkStatement-2   \t  200000\t      4120 ns/op\t         3.000 failures\t         7.000 late\t      2911 median-ns\t     48211 p99-ns\t       0 B/op\t       0 allocs/op",
		iterations: 200000, nsPerOp: 4120, medianNS: 2911, p99NS: 48211, allocs: 0, failures: 3, late: 7,
	}
	if r != want {
		t.Errorf("parseHookBenchmark = %+v, want %+v", r, want)
	}

	failed := `BenchmarkStatement-2   	--- FAIL: BenchmarkStatement-2
    filter_test.go:296: decision {Route:{Role:writer}}, stats {Calls:50715 Failures:1 Timeouts:1}
FAIL
`
	if _, err := parseHookBenchmark(failed); !errors.Is(err, errNoHookLine) {
		t.Errorf("a failed benchmark: error %v, want errNoHookLine", err)
	}
	noP99 := strings.Replace(goTestOutput, "     48211 p99-ns\t", "", 1)
	if _, err := parseHookBenchmark(noP99); err == nil || !strings.Contains(err.Error(), "no p99-ns") {
		t.Errorf("a line without p99-ns: error %v, want one naming p99-ns", err)
	}
}

// filterBench returns a bench with results for -M simple at 10 and 100
// clients on sluice and sluice+readwrite.
func filterBench() *bench {
	b := reportBench(targetDirect, targetPgBouncer, targetSluice, targetFilter)
	b.opts.clients = []int{10, 100}
	put := func(clients int, target string, tps, latencyMS, cpuSec float64) {
		b.results[resultKey{mode: "simple", clients: clients, target: target}] = runResult{
			bench:  pgbenchResult{tps: tps, latencyMS: latencyMS, processed: int64(tps * 10)},
			cpuSec: cpuSec, hasCPU: true,
		}
	}
	put(10, targetFilter, 17100, 0.585, 5.985) // 35 µs/tx
	put(100, targetSluice, 20000, 5, 6)        // 30 µs/tx
	put(100, targetFilter, 17000, 5.882, 5.95) // 35 µs/tx
	b.hook = hookResult{ran: true, line: "BenchmarkStatement-2 200000 4120 ns/op 2911 median-ns 48211 p99-ns",
		iterations: 200000, nsPerOp: 4120, medianNS: 2911, p99NS: 48211, allocs: 0, failures: -1, late: -1}
	return b
}

func TestMarkdownFilterSection(t *testing.T) {
	report := filterBench().markdown()
	lines := tableLines(t, report)
	// The main table is the one without -filter; the filter has its own.
	if want := "| clients | direct TPS | direct lat ms | pgbouncer TPS | pgbouncer lat ms | sluice TPS | sluice lat ms | sluice/pgbouncer TPS | sluice CPU µs/tx | pgbouncer CPU µs/tx | sluice/pgbouncer CPU |"; lines[0] != want {
		t.Errorf("main table header = %q, want %q", lines[0], want)
	}
	for _, want := range []string{
		"| mode | clients | sluice TPS | sluice lat ms | sluice+readwrite TPS | sluice+readwrite lat ms | sluice+readwrite/sluice TPS | sluice CPU µs/tx | sluice+readwrite CPU µs/tx | added CPU µs/tx |",
		"| simple | 10 | 18000 | 0.550 | 17100 | 0.585 | 0.95 | 30.0 | 35.0 | +5.0 |",
		"| simple | 100 | 20000 | 5.000 | 17000 | 5.882 | 0.85 | 30.0 | 35.0 | +5.0 |",
		"TPS target (sluice+readwrite/sluice ≥ 0.90 at 10 and 100 clients): -M simple 10 clients 0.95 met; -M simple 100 clients 0.85 NOT met.",
		"`go test -run ^$ -bench ^BenchmarkStatement$ -benchtime 200000x -count 1 ./filters`",
		"Median 2.91 µs, p99 48.21 µs, mean 4.12 µs, 0 allocs/call: median target met.",
		"```\nBenchmarkStatement-2 200000 4120 ns/op 2911 median-ns 48211 p99-ns\n```",
		"`reader_fallback = \"writer\"`",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}

func TestMarkdownFilterFailures(t *testing.T) {
	b := filterBench()
	b.results[resultKey{mode: "simple", clients: 100, target: targetFilter}] = runResult{err: errNoTPS}
	b.hook = hookResult{ran: true, err: errors.New("go test: exit status 1:\n    --- FAIL: BenchmarkStatement-2")}
	b.hook.medianNS = 5000 // left over from a partial parse: not shown
	report := b.markdown()
	for _, want := range []string{
		"| simple | 100 | 20000 | 5.000 | failed | - | - | 30.0 | - | - |",
		"-M simple 100 clients not measured.",
		"The benchmark failed:\n\n```\ngo test: exit status 1:\n    --- FAIL: BenchmarkStatement-2\n```\n",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "median target") {
		t.Errorf("a failed hook benchmark has a verdict:\n%s", report)
	}

	// A median above 3 µs misses the target.
	b.hook = hookResult{ran: true, line: "x", nsPerOp: 4000, medianNS: 3001, p99NS: 9000, allocs: -1, failures: -1, late: -1}
	if want := "Median 3.00 µs, p99 9.00 µs, mean 4.00 µs: median target NOT met."; !strings.Contains(b.markdown(), want) {
		t.Errorf("the report lacks %q:\n%s", want, b.markdown())
	}
}

func TestMarkdownWithoutFilter(t *testing.T) {
	report := reportBench(targetDirect, targetPgBouncer, targetSluice).markdown()
	for _, s := range []string{"readwrite", "hook"} {
		if strings.Contains(report, s) {
			t.Errorf("a report without -filter mentions %q:\n%s", s, report)
		}
	}
}

func TestRunOrderAlternatesSluiceAndFilter(t *testing.T) {
	names := func(ts []*target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.name)
		}
		return strings.Join(s, ",")
	}
	var all []*target
	for _, n := range []string{targetDirect, targetPgBouncer, targetSluice, targetBaseline, targetReader, targetFilter} {
		all = append(all, &target{name: n})
	}
	if got := names(runOrder(all, 0)); got != "direct,pgbouncer,sluice,baseline,reader,sluice+readwrite" {
		t.Errorf("order of combination 0 = %s", got)
	}
	// Baseline and the filter both run before sluice.
	if got := names(runOrder(all, 1)); got != "direct,pgbouncer,sluice+readwrite,baseline,reader,sluice" {
		t.Errorf("order of combination 1 = %s", got)
	}
	withoutBaseline := []*target{all[0], all[1], all[2], all[5]}
	if got := names(runOrder(withoutBaseline, 1)); got != "direct,pgbouncer,sluice+readwrite,sluice" {
		t.Errorf("order of combination 1 without baseline = %s", got)
	}
}

func TestCountSince(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sluice.log")
	before := `{"level":"warn","msg":"filter call failed","error":"old"}` + "\n"
	after := `{"level":"warn","msg":"filter call failed","error":"filter call timed out"}
{"level":"warn","msg":"something else"}
{"level":"warn","msg":"filter call failed","error":"trap"}
`
	if err := os.WriteFile(path, []byte(before+after), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &child{logPath: path}
	n, first := c.countSince(int64(len(before)), logFilterCallFailed)
	if n != 2 || first != `{"level":"warn","msg":"filter call failed","error":"filter call timed out"}` {
		t.Errorf("countSince = %d, %q; want 2 and the first line after the mark", n, first)
	}
	if n, _ := c.countSince(0, logFilterKeepFailing); n != 0 {
		t.Errorf("countSince of an absent message = %d", n)
	}
}

func TestWithoutBenchHeader(t *testing.T) {
	out := "goos: linux\ngoarch: amd64\npkg: github.com/sluicedb/sluice/filters\ncpu: AMD EPYC\n" +
		"BenchmarkStatement-2   \t--- FAIL: BenchmarkStatement-2\n    filter_test.go:296: decision {Route:{Role:writer}}\nFAIL\n"
	want := "BenchmarkStatement-2   \t--- FAIL: BenchmarkStatement-2\n    filter_test.go:296: decision {Route:{Role:writer}}\nFAIL\n"
	if got := withoutBenchHeader(out); got != want {
		t.Errorf("withoutBenchHeader = %q, want %q", got, want)
	}
}
