package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// filterDir is the example filter targetFilter runs, relative to the
// module root.
const filterDir = "examples/filters/readwrite"

// buildFilter compiles the readwrite example filter of the module at root
// into the WebAssembly module out, as its README says (wasip1, c-shared).
// sdk/filtertest.BuildModule does the same for tests, but its package
// imports testing.
func buildFilter(ctx context.Context, root, out string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join(root, filterDir)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", filterDir, err, strings.TrimSpace(output.String()))
	}
	return nil
}

// verifyFilterRoutes checks that the filter's decisions reach the server:
// readwrite sends a read-only statement outside a transaction to a
// replica, and with none Sluice runs it on the writer's read-only pool,
// whose sessions start with default_transaction_read_only on. Without the
// filter the statement would run on the writer's ordinary pool.
func verifyFilterRoutes(ctx context.Context, port int) error {
	v, err := querySingle(ctx, port, "SHOW default_transaction_read_only")
	if err != nil {
		return err
	}
	if v != "on" {
		return fmt.Errorf("a read-only statement through the filter did not run on a read-only session (default_transaction_read_only = %q): "+
			"the filter's replica route was not applied", v)
	}
	return nil
}

// The filter's log messages for a failed call (answered by its failure
// policy: fail_safe, the writer) and for its breaker opening (the calls it
// then skips are not logged).
const (
	logFilterCallFailed  = "filter call failed"
	logFilterKeepFailing = "filter keeps failing"
)

// noteFilterFailures adds a note when the filter target logged failed
// filter calls during the last run of t (warm-up included): a timed-out
// call is answered fail_safe and its instance is replaced, which the run's
// figures include.
func (b *bench) noteFilterFailures(t *target, mode string, clients int) {
	if t.proc == nil {
		return
	}
	failed, first := t.proc.countSince(t.logMark, logFilterCallFailed)
	trips, firstTrip := t.proc.countSince(t.logMark, logFilterKeepFailing)
	if failed == 0 && trips == 0 {
		return
	}
	if first == "" {
		first = firstTrip
	}
	tripped := ""
	if trips > 0 {
		tripped = fmt.Sprintf("; the breaker opened %d time(s), and while it is open statements skip the filter, so the figures understate its cost", trips)
	}
	b.notef("%s, -M %s, %d clients: %d filter call(s) failed during the warm-up and measured run, answered fail_safe%s. The first:\n%s",
		t.name, mode, clients, failed, tripped, indent(first, "    "))
}

// runHookBenchmark runs the hook-cost benchmark and keeps its result for
// the report.
func (b *bench) runHookBenchmark(ctx context.Context) {
	root := b.moduleRoot
	if root == "" {
		var err error
		if root, err = moduleRoot(ctx); err != nil {
			b.hook = hookResult{ran: true, err: err}
			return
		}
	}
	b.logf("running go %s", strings.Join(hookBenchArgs(), " "))
	b.hook = runHookBenchmark(ctx, root)
	if b.hook.err != nil {
		b.logf("hook benchmark failed: %v", b.hook.err)
		return
	}
	b.logf("hook benchmark: median %.0f ns, p99 %.0f ns", b.hook.medianNS, b.hook.p99NS)
}

// The hook-cost benchmark: BenchmarkStatement in package filters, one
// statement hook call of the readwrite filter per iteration.
const (
	hookBenchName    = "BenchmarkStatement"
	hookBenchPackage = "./filters"
	hookBenchCalls   = 200000
	hookBenchTimeout = 10 * time.Minute
	// hookTargetNS is the target for the median hook call.
	hookTargetNS = 3000
)

// hookBenchArgs returns the go command's arguments for the hook-cost
// benchmark.
func hookBenchArgs() []string {
	return []string{"test", "-run", "^$", "-bench", "^" + hookBenchName + "$",
		"-benchtime", strconv.Itoa(hookBenchCalls) + "x", "-count", "1", hookBenchPackage}
}

// hookResult is the outcome of the hook-cost benchmark.
type hookResult struct {
	ran  bool   // the benchmark was run (it may have failed)
	err  error  // why it failed; nil if it succeeded
	line string // the benchmark's result line, as go test printed it
	// iterations is how many hook calls were timed; nsPerOp their mean,
	// medianNS and p99NS the benchmark's own percentiles.
	iterations int64
	nsPerOp    float64
	medianNS   float64
	p99NS      float64
	allocs     float64 // allocations per call; -1 if not reported
	// failures and late count calls that failed (answered by the failure
	// policy) and that ended past the timeout (answer used); -1 if not
	// reported.
	failures, late float64
}

// errNoHookLine is returned when go test's output holds no result line of
// the hook benchmark.
var errNoHookLine = errors.New("no " + hookBenchName + " result line in go test's output")

// runHookBenchmark runs the hook-cost benchmark in the module at root.
func runHookBenchmark(ctx context.Context, root string) hookResult {
	ctx, cancel := context.WithTimeout(ctx, hookBenchTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", hookBenchArgs()...)
	cmd.Dir = root
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	detach(cmd)
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	r, parseErr := parseHookBenchmark(output.String())
	r.ran = true
	switch quoted := quoteLines(withoutBenchHeader(output.String())); {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		r.err = fmt.Errorf("timed out after %v%s", hookBenchTimeout, quoted)
	case runErr != nil:
		r.err = fmt.Errorf("go test: %w%s", runErr, quoted)
	case parseErr != nil:
		r.err = fmt.Errorf("%w%s", parseErr, quoted)
	}
	return r
}

// withoutBenchHeader drops the goos, goarch, pkg and cpu lines go test
// prints before benchmark results, which the report shows elsewhere, so
// that quoting a failure keeps the lines that explain it.
func withoutBenchHeader(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if k, _, ok := strings.Cut(line, ": "); ok && (k == "goos" || k == "goarch" || k == "pkg" || k == "cpu") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// parseHookBenchmark reads the hook benchmark's result line from go
// test's output:
//
//	BenchmarkStatement-2   200000   4120 ns/op   2911 median-ns   48211 p99-ns   0 B/op   0 allocs/op
//
// ns/op, median-ns and p99-ns are required.
func parseHookBenchmark(out string) (hookResult, error) {
	r := hookResult{allocs: -1, failures: -1, late: -1}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != hookBenchName && !strings.HasPrefix(f[0], hookBenchName+"-")) {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue // "BenchmarkStatement-2 --- FAIL: ..."
		}
		r.line, r.iterations = strings.TrimSpace(line), n
		metrics := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return r, fmt.Errorf("%s: %q is not a number in %q", hookBenchName, f[i], line)
			}
			metrics[f[i+1]] = v
		}
		for unit, dst := range map[string]*float64{"ns/op": &r.nsPerOp, "median-ns": &r.medianNS, "p99-ns": &r.p99NS} {
			v, ok := metrics[unit]
			if !ok {
				return r, fmt.Errorf("%s: no %s in %q", hookBenchName, unit, line)
			}
			*dst = v
		}
		if v, ok := metrics["allocs/op"]; ok {
			r.allocs = v
		}
		if v, ok := metrics["failures"]; ok {
			r.failures = v
		}
		if v, ok := metrics["late"]; ok {
			r.late = v
		}
		return r, nil
	}
	return r, errNoHookLine
}
