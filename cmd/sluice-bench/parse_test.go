package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// pgbench15Output is what pgbench 15 prints to stdout for a -S -T run.
const pgbench15Output = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 10
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 55779
number of failed transactions: 2 (0.004%)
latency average = 0.538 ms
initial connection time = 12.714 ms
tps = 18593.402316 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    pgbenchResult
		wantErr error
	}{
		{
			name: "pgbench 15",
			out:  pgbench15Output,
			want: pgbenchResult{tps: 18593.402316, latencyMS: 0.538, processed: 55779, failed: 2},
		},
		{
			name: "pgbench 14 has no failed transactions line",
			out:  strings.Replace(pgbench15Output, "number of failed transactions: 2 (0.004%)\n", "", 1),
			want: pgbenchResult{tps: 18593.402316, latencyMS: 0.538, processed: 55779},
		},
		{
			name:    "aborted before the summary",
			out:     "pgbench (15.18)\n",
			wantErr: errNoTPS,
		},
		{
			name:    "tps including connection time only",
			out:     "tps = 100.0 (including connections establishing)\n",
			wantErr: errNoTPS,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePgbench(tt.out)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPgbenchArgs(t *testing.T) {
	got := strings.Join(pgbenchRun{port: 6432, clients: 1, threads: 2, mode: "prepared", duration: 2500 * time.Millisecond}.args(), " ")
	want := "-S -n -T 3 -c 1 -j 1 -M prepared -h 127.0.0.1 -p 6432 -U bench bench"
	if got != want {
		t.Errorf("args = %q, want %q", got, want)
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name holds a space and a parenthesis, as a process may
	// name itself.
	stat := "4242 (sl uice) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 1500 250 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615\n"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1750 {
		t.Errorf("utime+stime = %d, want 1750", got)
	}
	if _, err := parseStatCPU("4242 (truncated) S 1 2"); err == nil {
		t.Error("a truncated stat line was accepted")
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tsluice\nVmPeak:\t 1300000 kB\nVmHWM:\t   15052 kB\nVmRSS:\t   14848 kB\nThreads:\t9\n"
	rss, peak, err := parseStatusMemory([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 14848 || peak != 15052 {
		t.Errorf("rss, peak = %d, %d; want 14848, 15052", rss, peak)
	}
	if _, _, err := parseStatusMemory([]byte("Name:\tzombie\n")); err == nil {
		t.Error("status without VmRSS was accepted")
	}
}

func TestQuoteLinesFoldsClients(t *testing.T) {
	var b strings.Builder
	for i := range 1000 {
		b.WriteString("pgbench: error: client " + strings.Repeat("9", 1+i%3) + " aborted in command 1 (SQL) of script 0\n")
	}
	b.WriteString("pgbench: error: Run was aborted; the above results are incomplete.\n")
	got := quoteLines(b.String())
	want := ":\n    pgbench: error: client N aborted in command 1 (SQL) of script 0 (x1000)" +
		"\n    pgbench: error: Run was aborted; the above results are incomplete."
	if got != want {
		t.Errorf("quoteLines =\n%s\nwant\n%s", got, want)
	}
	if quoteLines("\n  \n") != "" {
		t.Error("blank output was quoted")
	}
}

func TestCPUMicrosCell(t *testing.T) {
	ok := runResult{bench: pgbenchResult{tps: 10000, processed: 100000}, cpuSec: 2, hasCPU: true}
	if got := cpuMicrosCell(ok, true, 10*time.Second); got != "20.0" {
		t.Errorf("cpuMicrosCell = %q, want 20.0", got)
	}
	noCount := ok
	noCount.bench.processed = 0
	if got := cpuMicrosCell(noCount, true, 10*time.Second); got != "20.0" {
		t.Errorf("cpuMicrosCell without a processed count = %q, want 20.0 from tps × duration", got)
	}
	failed := ok
	failed.err = errNoTPS
	if got := cpuMicrosCell(failed, true, 10*time.Second); got != "-" {
		t.Errorf("cpuMicrosCell of a failed run = %q, want -", got)
	}
}
