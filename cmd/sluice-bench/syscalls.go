package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// straceBinary is where Debian's strace package installs it.
const straceBinary = "/usr/bin/strace"

// The syscall stage (-syscalls): one pgbench -S -M simple run of
// syscallRunDuration per proxy and client count, with strace attached to
// the proxy.
const (
	syscallMode        = "simple"
	syscallRunDuration = 5 * time.Second
	// straceAttachTimeout bounds how long strace has to say it attached,
	// and straceStopTimeout how long it has to detach and exit after
	// SIGINT, and the proxy to show no tracer.
	straceAttachTimeout = 15 * time.Second
	straceStopTimeout   = 15 * time.Second
)

// syscallClients are the client counts of the syscall stage.
var syscallClients = []int{10, 100}

// syscallTargets are the proxies the syscall and idle stages measure, in
// the order they are run and shown.
var syscallTargets = []string{targetPgBouncer, targetSluice, targetSluiceGoroutine}

// syscallCount is one row of strace -c's summary: the calls of one system
// call (or the total) and how many of them returned an error.
type syscallCount struct {
	name   string
	calls  int64
	errors int64
}

// straceSummary is strace -c's summary table.
type straceSummary struct {
	rows  []syscallCount // as strace lists them: most time first
	total syscallCount   // the total line, or the rows' sum if it has none
}

// syscallRun is one pgbench run with strace attached to a proxy.
type syscallRun struct {
	target  string
	clients int
	err     error // why the run or strace failed; nil if both succeeded
	bench   pgbenchResult
	summary straceSummary
	threads int // the proxy's threads when strace attached, as it said
}

// errNoStraceSummary is returned when strace's output holds no summary
// table.
var errNoStraceSummary = errors.New("no strace -c summary table (header \"% time     seconds  usecs/call     calls    errors syscall\")")

// parseStraceSummary reads the table `strace -c` writes:
//
//	% time     seconds  usecs/call     calls    errors syscall
//	------ ----------- ----------- --------- --------- ----------------
//	 30.27    0.648606         550      1178         3 futex
//	 16.23    0.347765          18     19278      9523 read
//	 12.69    0.271831          27      9759           write
//	------ ----------- ----------- --------- --------- ----------------
//	100.00    2.142729          59     35872      9526 total
//
// The errors column is blank when no call failed.
func parseStraceSummary(out string) (straceSummary, error) {
	var s straceSummary
	inTable, haveTotal := false, false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case !inTable:
			inTable = len(f) >= 2 && f[0] == "%" && f[1] == "time" && f[len(f)-1] == "syscall"
			continue
		case strings.HasPrefix(f[0], "---"):
			continue
		}
		if len(f) != 5 && len(f) != 6 {
			return s, fmt.Errorf("strace summary: unexpected line %q", line)
		}
		c := syscallCount{name: f[len(f)-1]}
		var err error
		if c.calls, err = strconv.ParseInt(f[3], 10, 64); err != nil {
			return s, fmt.Errorf("strace summary: calls %q in %q", f[3], line)
		}
		if len(f) == 6 {
			if c.errors, err = strconv.ParseInt(f[4], 10, 64); err != nil {
				return s, fmt.Errorf("strace summary: errors %q in %q", f[4], line)
			}
		}
		if c.name == "total" {
			s.total, haveTotal = c, true
			continue
		}
		s.rows = append(s.rows, c)
	}
	if !inTable {
		return s, errNoStraceSummary
	}
	if !haveTotal {
		s.total = syscallCount{name: "total"}
		for _, r := range s.rows {
			s.total.calls += r.calls
			s.total.errors += r.errors
		}
	}
	return s, nil
}

// perTx returns n per transaction of the run; false if it processed none.
func (r syscallRun) perTx(n int64) (float64, bool) {
	if r.err != nil || r.bench.processed <= 0 {
		return 0, false
	}
	return float64(n) / float64(r.bench.processed), true
}

// count returns the summary row of the system call name (zero if strace
// saw none).
func (s straceSummary) count(name string) syscallCount {
	for _, r := range s.rows {
		if r.name == name {
			return r
		}
	}
	return syscallCount{name: name}
}

// runSyscalls makes the syscall stage's runs, keeping them for the report.
func (b *bench) runSyscalls(ctx context.Context) {
	for _, clients := range syscallClients {
		for _, t := range b.targets {
			if !slices.Contains(syscallTargets, t.name) {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			r := b.traceOne(ctx, t, clients)
			if ctx.Err() != nil {
				return
			}
			b.syscalls = append(b.syscalls, r)
			if r.err != nil {
				b.logf("%-16s strace   %4d clients: failed", t.name, clients)
				b.notef("strace on %s, %d clients: failed: %v", t.name, clients, r.err)
				continue
			}
			perTx, _ := r.perTx(r.summary.total.calls)
			b.logf("%-16s strace   %4d clients: %8.0f tps under strace, %.1f syscalls/tx", t.name, clients, r.bench.tps, perTx)
		}
	}
}

// traceOne runs pgbench with strace attached to t's process and returns
// the counts. strace is detached and gone, and the proxy shows no tracer,
// when it returns (or the error says otherwise).
func (b *bench) traceOne(ctx context.Context, t *target, clients int) syscallRun {
	r := syscallRun{target: t.name, clients: clients}
	note, err := t.check(ctx)
	if note != "" {
		b.notef("before strace on %s, %d clients: %s", t.name, clients, note)
	}
	if err != nil {
		r.err = err
		return r
	}
	pid := t.proc.pid()
	out := filepath.Join(b.workDir, fmt.Sprintf("strace-%s-%d.txt", t.name, clients))
	cmd := exec.Command(straceBinary, "-c", "-f", "-p", strconv.Itoa(pid), "-o", out)
	stderr := newLineWatcher("attached")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	detach(cmd)
	if err := cmd.Start(); err != nil {
		r.err = fmt.Errorf("starting strace: %w", err)
		return r
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopStrace := func() error {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			// strace exits with the signal's status after SIGINT.
			var exitErr *exec.ExitError
			if err != nil && !errors.As(err, &exitErr) {
				return fmt.Errorf("strace: %w", err)
			}
		case <-time.After(straceStopTimeout):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("strace did not exit within %v of SIGINT and was killed%s", straceStopTimeout, quoteLines(stderr.String()))
		}
		return waitUntraced(pid, straceStopTimeout)
	}

	select {
	case <-stderr.seen:
		r.threads = attachedThreads(stderr.match())
	case err := <-exited:
		r.err = fmt.Errorf("strace exited before attaching (%v)%s", err, quoteLines(stderr.String()))
		return r
	case <-time.After(straceAttachTimeout):
		r.err = errors.Join(fmt.Errorf("strace did not attach to pid %d within %v%s", pid, straceAttachTimeout, quoteLines(stderr.String())), stopStrace())
		return r
	case <-ctx.Done():
		r.err = errors.Join(ctx.Err(), stopStrace())
		return r
	}

	t.logMark = t.proc.logSize()
	run := pgbenchRun{port: t.port, clients: clients, threads: b.opts.threads, mode: syscallMode, duration: syscallRunDuration}
	var benchErr error
	r.bench, benchErr = runPgbench(ctx, run, b.verbose())
	stopErr := stopStrace()
	if benchErr != nil {
		if logged := t.proc.logSince(t.logMark); logged != "" {
			benchErr = fmt.Errorf("%w\n  %s logged meanwhile:\n%s", benchErr, t.name, indent(logged, "    "))
		}
	}
	if err := errors.Join(benchErr, stopErr); err != nil {
		r.err = err
		return r
	}
	text, err := os.ReadFile(out)
	if err != nil {
		r.err = fmt.Errorf("reading strace's output: %w", err)
		return r
	}
	if r.summary, err = parseStraceSummary(string(text)); err != nil {
		r.err = fmt.Errorf("%w%s", err, quoteLines(string(text)+stderr.String()))
	}
	return r
}

// attachedPattern matches strace's message on attaching to a process with
// more than one thread.
var attachedPattern = regexp.MustCompile(`attached with ([0-9]+) threads`)

// attachedThreads returns the thread count in strace's message on
// attaching: "strace: Process 30128 attached with 6 threads" (one thread
// without "with"); 0 if line is not that message.
func attachedThreads(line string) int {
	if m := attachedPattern.FindStringSubmatch(line); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if strings.Contains(line, "attached") {
		return 1
	}
	return 0
}

// waitUntraced waits until no thread of process pid has a tracer
// (TracerPid 0 in /proc/<pid>/task/*/status), at most timeout.
func waitUntraced(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		tracer, err := tracerOf(pid)
		if err != nil || tracer == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still has tracer %d %v after strace exited", pid, tracer, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tracerOf returns the TracerPid of the first traced thread of process
// pid, 0 if none is traced. A process that has exited has no tracer.
func tracerOf(pid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for _, task := range tasks {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue // the thread has ended
		}
		if n := parseTracerPid(string(status)); n != 0 {
			return n, nil
		}
	}
	return 0, nil
}

// parseTracerPid returns the TracerPid field of a /proc status file; 0 if
// it is absent.
func parseTracerPid(status string) int {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// lineWatcher collects a program's output and closes seen at the first
// line containing its substring.
type lineWatcher struct {
	substr string
	seen   chan struct{}
	mu     sync.Mutex
	buf    strings.Builder
	first  string // the first line containing substr
}

func newLineWatcher(substr string) *lineWatcher {
	return &lineWatcher{substr: substr, seen: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.first == "" {
		for _, line := range strings.Split(w.buf.String(), "\n") {
			if strings.Contains(line, w.substr) {
				w.first = strings.TrimSpace(line)
				close(w.seen)
				break
			}
		}
	}
	return len(p), nil
}

// String returns everything written so far.
func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// match returns the first line containing the substring.
func (w *lineWatcher) match() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first
}

// Reporting.

// syscallTopN is how many system calls the per-syscall table shows.
const syscallTopN = 10

// topSyscalls returns the names of the system calls with the most calls
// per transaction summed over the successful runs, at most n, most first.
func topSyscalls(runs []syscallRun, n int) []string {
	sum := map[string]float64{}
	for _, r := range runs {
		for _, c := range r.summary.rows {
			if v, ok := r.perTx(c.calls); ok {
				sum[c.name] += v
			}
		}
	}
	names := make([]string, 0, len(sum))
	for name := range sum {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case sum[a] > sum[b]:
			return -1
		case sum[a] < sum[b]:
			return 1
		}
		return strings.Compare(a, b)
	})
	if len(names) > n {
		names = names[:n]
	}
	return names
}

// perTxText renders a count per transaction with two decimals, a count
// too small for them as "<0.01" rather than "0.00".
func perTxText(v float64) string {
	if v > 0 && v < 0.005 {
		return "<0.01"
	}
	return fmt.Sprintf("%.2f", v)
}

// writeSyscalls writes the syscall stage's section.
func (b *bench) writeSyscalls(w *strings.Builder) {
	if !b.opts.syscalls {
		return
	}
	fmt.Fprintf(w, "System calls per transaction (-syscalls): after the runs above, for each proxy and client count one "+
		"`pgbench -S -n -T %d -c <clients> -j %d -M %s` run with `%s -c -f -p <proxy pid>` attached to the proxy process (all its threads, "+
		"threads started meanwhile included), detached (SIGINT) and gone before the next run. strace stops the proxy at every system call, "+
		"so the TPS under strace is far below the table above and says nothing about speed; what this measures is the count per transaction: "+
		"strace's calls over the transactions pgbench processed in that run. The counts include the clients' logins and anything the proxy "+
		"did in the background during the run. \"errors\" are calls that returned an error (strace -c does not say which; a read on an empty "+
		"non-blocking socket returns EAGAIN, for example), also per transaction.\n\n",
		wholeSeconds(syscallRunDuration), b.opts.threads, syscallMode, straceBinary)
	if len(b.syscalls) == 0 {
		w.WriteString("No run was made.\n\n")
		return
	}
	writeRow(w, []string{"target", "clients", "TPS under strace", "transactions", "syscalls/tx", "errors/tx", "threads at attach"})
	writeRow(w, []string{"---", "---:", "---:", "---:", "---:", "---:", "---:"})
	var ok []syscallRun
	for _, r := range b.syscalls {
		if r.err != nil {
			writeRow(w, []string{r.target, strconv.Itoa(r.clients), "failed", "-", "-", "-", "-"})
			continue
		}
		ok = append(ok, r)
		calls, _ := r.perTx(r.summary.total.calls)
		errs, _ := r.perTx(r.summary.total.errors)
		threads := "-"
		if r.threads > 0 {
			threads = strconv.Itoa(r.threads)
		}
		writeRow(w, []string{r.target, strconv.Itoa(r.clients), fmt.Sprintf("%.0f", r.bench.tps), strconv.FormatInt(r.bench.processed, 10),
			perTxText(calls), perTxText(errs), threads})
	}
	w.WriteString("\n")
	if len(ok) == 0 {
		return
	}
	top := topSyscalls(ok, syscallTopN)
	fmt.Fprintf(w, "Per system call, the %d with the most calls per transaction over these runs: calls/tx, and in parentheses the calls "+
		"that returned an error, per transaction; \"other\" is the rest.\n\n", len(top))
	header := []string{"syscall"}
	for _, r := range ok {
		header = append(header, fmt.Sprintf("%s %d cl", r.target, r.clients))
	}
	writeRow(w, header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---:"
	}
	sep[0] = "---"
	writeRow(w, sep)
	cell := func(r syscallRun, c syscallCount) string {
		calls, _ := r.perTx(c.calls)
		s := perTxText(calls)
		if c.errors > 0 {
			errs, _ := r.perTx(c.errors)
			s += " (" + perTxText(errs) + " err)"
		}
		return s
	}
	for _, name := range top {
		row := []string{name}
		for _, r := range ok {
			row = append(row, cell(r, r.summary.count(name)))
		}
		writeRow(w, row)
	}
	other := []string{"other"}
	total := []string{"**total**"}
	for _, r := range ok {
		rest := syscallCount{name: "other"}
		for _, c := range r.summary.rows {
			if !slices.Contains(top, c.name) {
				rest.calls += c.calls
				rest.errors += c.errors
			}
		}
		other = append(other, cell(r, rest))
		total = append(total, cell(r, r.summary.total))
	}
	writeRow(w, other)
	writeRow(w, total)
	w.WriteString("\n")
}
