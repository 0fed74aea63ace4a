package main

import (
	"errors"
	"strings"
	"testing"
)

// straceGoEcho is what strace 6.1 wrote with `strace -c -f -p <pid> -o
// FILE`, stopped by SIGINT after 2 s, attached to a Go process (6 threads)
// running a TCP echo server and four clients on loopback.
const straceGoEcho = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 32.55    0.697423        3576       195           nanosleep
 30.27    0.648606         550      1178         3 futex
 16.23    0.347765          18     19278      9523 read
 12.69    0.271831          27      9759           write
  7.41    0.158879          30      5191           epoll_pwait
  0.70    0.014918          55       270           sched_yield
  0.15    0.003307        3307         1           restart_syscall
------ ----------- ----------- --------- --------- ----------------
100.00    2.142729          59     35872      9526 total
`

func TestParseStraceSummary(t *testing.T) {
	s, err := parseStraceSummary(straceGoEcho)
	if err != nil {
		t.Fatal(err)
	}
	want := []syscallCount{
		{"nanosleep", 195, 0}, {"futex", 1178, 3}, {"read", 19278, 9523}, {"write", 9759, 0},
		{"epoll_pwait", 5191, 0}, {"sched_yield", 270, 0}, {"restart_syscall", 1, 0},
	}
	if len(s.rows) != len(want) {
		t.Fatalf("rows = %+v, want %+v", s.rows, want)
	}
	for i := range want {
		if s.rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, s.rows[i], want[i])
		}
	}
	if s.total != (syscallCount{"total", 35872, 9526}) {
		t.Errorf("total = %+v, want 35872 calls and 9526 errors", s.total)
	}
	if got := s.count("read"); got.calls != 19278 || got.errors != 9523 {
		t.Errorf("count(read) = %+v", got)
	}
	if got := s.count("accept4"); got.calls != 0 {
		t.Errorf("count of an absent call = %+v", got)
	}

	// Without the total line, the rows are summed.
	noTotal := straceGoEcho[:strings.LastIndex(straceGoEcho, "------")]
	s, err = parseStraceSummary(noTotal)
	if err != nil {
		t.Fatal(err)
	}
	if s.total != (syscallCount{"total", 35872, 9526}) {
		t.Errorf("summed total = %+v", s.total)
	}

	// strace writes nothing when it saw no call.
	if _, err := parseStraceSummary(""); !errors.Is(err, errNoStraceSummary) {
		t.Errorf("empty output: error %v, want errNoStraceSummary", err)
	}
	garbled := strings.Replace(straceGoEcho, "     19278", " many", 1)
	if _, err := parseStraceSummary(garbled); err == nil || !strings.Contains(err.Error(), `calls "many"`) {
		t.Errorf("a non-numeric count: error %v", err)
	}
}

func TestParseTracerPid(t *testing.T) {
	status := "Name:\tpgbouncer\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\nPPid:\t1\nTracerPid:\t5151\nUid:\t0\t0\t0\t0\n"
	if got := parseTracerPid(status); got != 5151 {
		t.Errorf("parseTracerPid = %d, want 5151", got)
	}
	if got := parseTracerPid(strings.Replace(status, "5151", "0", 1)); got != 0 {
		t.Errorf("untraced: %d", got)
	}
}

func TestAttachedThreads(t *testing.T) {
	for line, want := range map[string]int{
		"strace: Process 30128 attached with 6 threads":                    6,
		"strace: Process 4242 attached":                                    1,
		"strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted": 0,
	} {
		if got := attachedThreads(line); got != want {
			t.Errorf("attachedThreads(%q) = %d, want %d", line, got, want)
		}
	}
}

func TestLineWatcher(t *testing.T) {
	w := newLineWatcher("attached")
	w.Write([]byte("strace: Process 30128 att"))
	select {
	case <-w.seen:
		t.Fatal("seen before the line was complete")
	default:
	}
	w.Write([]byte("ached with 6 threads\nstrace: Process 30128 detached\n"))
	select {
	case <-w.seen:
	default:
		t.Fatal("not seen")
	}
	if got := w.match(); got != "strace: Process 30128 attached with 6 threads" {
		t.Errorf("match = %q", got)
	}
	w.Write([]byte("strace: Process 1 attached\n")) // closing seen twice would panic
}

func TestSyscallsReport(t *testing.T) {
	b := reportBench(targetDirect, targetPgBouncer, targetSluice, targetSluiceGoroutine)
	b.opts.syscalls = true
	echo, err := parseStraceSummary(straceGoEcho)
	if err != nil {
		t.Fatal(err)
	}
	b.syscalls = []syscallRun{
		{target: targetPgBouncer, clients: 10, bench: pgbenchResult{tps: 3587.2, processed: 17936}, summary: echo, threads: 1},
		{target: targetSluice, clients: 10, err: errors.New("strace did not attach")},
		{target: targetSluiceGoroutine, clients: 10, bench: pgbenchResult{tps: 1000, processed: 9759},
			summary: straceSummary{rows: []syscallCount{{"write", 9759, 0}, {"read", 19518, 9759}}, total: syscallCount{"total", 29277, 9759}}},
	}
	report := b.markdown()
	for _, want := range []string{
		"`pgbench -S -n -T 5 -c <clients> -j 2 -M simple` run with `/usr/bin/strace -c -f -p <proxy pid>`",
		"| target | clients | TPS under strace | transactions | syscalls/tx | errors/tx | threads at attach |",
		"| pgbouncer | 10 | 3587 | 17936 | 2.00 | 0.53 | 1 |",
		"| sluice | 10 | failed | - | - | - | - |",
		"| sluice-goroutine | 10 | 1000 | 9759 | 3.00 | 1.00 | - |",
		"| syscall | pgbouncer 10 cl | sluice-goroutine 10 cl |",
		// read: 19278/17936 and 9523/17936; 19518/9759 and 9759/9759.
		"| read | 1.07 (0.53 err) | 2.00 (1.00 err) |",
		"| write | 0.54 | 1.00 |",
		"| futex | 0.07 (<0.01 err) | 0.00 |",
		"| **total** | 2.00 (0.53 err) | 3.00 (1.00 err) |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	// The top 10 of 7 names are all of them: "other" is empty.
	if !strings.Contains(report, "| other | 0.00 | 0.00 |") {
		t.Errorf("the report lacks an empty other row:\n%s", report)
	}
	if got := topSyscalls(b.syscalls, 2); strings.Join(got, ",") != "read,write" {
		t.Errorf("topSyscalls = %v, want read,write", got)
	}
}
