package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// reportBench returns a bench with results for -M simple at 10 clients on
// the given targets, as if they had run.
func reportBench(targets ...string) *bench {
	b := &bench{
		opts: options{
			clients: []int{10}, modes: []string{"simple"}, targets: targets,
			duration: 10 * time.Second, warmup: 2 * time.Second, scale: 10, poolSize: 20, threads: 2,
		},
		results: map[resultKey]runResult{},
	}
	put := func(target string, tps float64, latencyMS, cpuSec float64) {
		b.results[resultKey{mode: "simple", clients: 10, target: target}] = runResult{
			bench:  pgbenchResult{tps: tps, latencyMS: latencyMS, processed: int64(tps * 10)},
			cpuSec: cpuSec, hasCPU: target != targetDirect,
		}
	}
	put(targetDirect, 40000, 0.25, 0)
	put(targetPgBouncer, 20000, 0.5, 4)            // 20 µs/tx
	put(targetSluice, 18000, 0.55, 5.4)            // 30 µs/tx
	put(targetSluiceGoroutine, 19000, 0.526, 4.56) // 24 µs/tx
	put(targetBaseline, 16000, 0.625, 6.4)         // 40 µs/tx
	return b
}

// tableLines returns the header, separator and rows of the report's first
// table.
func tableLines(t *testing.T, report string) []string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(report, "\n") {
		if strings.HasPrefix(line, "| ") {
			lines = append(lines, line)
		} else if len(lines) > 0 {
			break
		}
	}
	if len(lines) < 3 {
		t.Fatalf("no table in the report:\n%s", report)
	}
	return lines
}

func TestMarkdownWithoutBaseline(t *testing.T) {
	report := reportBench(targetDirect, targetPgBouncer, targetSluice).markdown()
	got := tableLines(t, report)
	want := []string{
		"| clients | direct TPS | direct lat ms | pgbouncer TPS | pgbouncer lat ms | sluice TPS | sluice lat ms | sluice/pgbouncer TPS | sluice CPU µs/tx | pgbouncer CPU µs/tx | sluice/pgbouncer CPU |",
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
		"| 10 | 40000 | 0.250 | 20000 | 0.500 | 18000 | 0.550 | 0.90 | 30.0 | 20.0 | 1.50 |",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(report, "baseline") {
		t.Errorf("a report without -baseline-bin mentions a baseline:\n%s", report)
	}
}

func TestMarkdownBothEngines(t *testing.T) {
	report := reportBench(targetDirect, targetPgBouncer, targetSluice, targetSluiceGoroutine).markdown()
	got := tableLines(t, report)
	want := []string{
		"| clients | direct TPS | direct lat ms | pgbouncer TPS | pgbouncer lat ms | sluice TPS | sluice lat ms | sluice-goroutine TPS | sluice-goroutine lat ms | " +
			"sluice/pgbouncer TPS | sluice-goroutine/pgbouncer TPS | sluice CPU µs/tx | sluice-goroutine CPU µs/tx | pgbouncer CPU µs/tx | " +
			"sluice/pgbouncer CPU | sluice-goroutine/pgbouncer CPU |",
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
		"| 10 | 40000 | 0.250 | 20000 | 0.500 | 18000 | 0.550 | 19000 | 0.526 | 0.90 | 0.95 | 30.0 | 24.0 | 20.0 | 1.50 | 1.20 |",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range []string{"`engine = \"loop\"`", "`engine = \"goroutine\"`", "The two take turns going first."} {
		if !strings.Contains(report, s) {
			t.Errorf("the report lacks %q:\n%s", s, report)
		}
	}
}

func TestMarkdownWithBaseline(t *testing.T) {
	b := reportBench(targetDirect, targetPgBouncer, targetSluice, targetBaseline)
	b.opts.baselineBin = "/tmp/old-sluice"
	report := b.markdown()
	got := tableLines(t, report)
	want := []string{
		"| clients | direct TPS | direct lat ms | pgbouncer TPS | pgbouncer lat ms | sluice TPS | sluice lat ms | baseline TPS | baseline lat ms | sluice/pgbouncer TPS | baseline/pgbouncer TPS | sluice CPU µs/tx | pgbouncer CPU µs/tx | baseline CPU µs/tx | sluice/pgbouncer CPU | baseline/pgbouncer CPU | sluice/baseline CPU |",
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
		"| 10 | 40000 | 0.250 | 20000 | 0.500 | 18000 | 0.550 | 16000 | 0.625 | 0.90 | 0.80 | 30.0 | 20.0 | 40.0 | 1.50 | 2.00 | 0.75 |",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range []string{"\"sluice/baseline CPU\" is sluice's CPU time per transaction over baseline's", "- baseline executable: /tmp/old-sluice"} {
		if !strings.Contains(report, s) {
			t.Errorf("the report lacks %q:\n%s", s, report)
		}
	}
}

func TestMarkdownBaselineFailed(t *testing.T) {
	b := reportBench(targetSluice, targetBaseline)
	key := resultKey{mode: "simple", clients: 10, target: targetBaseline}
	b.results[key] = runResult{err: errNoTPS}
	got := tableLines(t, b.markdown())[2]
	want := "| 10 | 18000 | 0.550 | failed | - | 30.0 | - | - |"
	if got != want {
		t.Errorf("row = %q, want %q", got, want)
	}
}

func TestCPURatio(t *testing.T) {
	sluice := runResult{bench: pgbenchResult{tps: 10000, processed: 100000}, cpuSec: 3.1, hasCPU: true}
	baseline := runResult{bench: pgbenchResult{tps: 10000, processed: 100000}, cpuSec: 3.0, hasCPU: true}
	if got := cpuRatio(sluice, baseline, 10*time.Second); got != "1.03" {
		t.Errorf("cpuRatio = %q, want 1.03", got)
	}
	// The ratio is per transaction: twice the CPU for twice the
	// transactions is the same cost.
	baseline.bench.processed, baseline.cpuSec = 50000, 1.5
	if got := cpuRatio(sluice, baseline, 10*time.Second); got != "1.03" {
		t.Errorf("cpuRatio with fewer baseline transactions = %q, want 1.03", got)
	}
	noCPU := baseline
	noCPU.hasCPU = false
	if got := cpuRatio(sluice, noCPU, 10*time.Second); got != "" {
		t.Errorf("cpuRatio without baseline CPU = %q, want empty", got)
	}
}

func TestMarkdownTLS(t *testing.T) {
	b := reportBench(targetDirect, targetPgBouncer, targetSluice, targetPgBouncerTLS, targetSluiceTLS)
	b.results[resultKey{mode: "simple", clients: 10, target: targetPgBouncerTLS}] = runResult{
		bench: pgbenchResult{tps: 16000, latencyMS: 0.625, processed: 160000}, cpuSec: 4, hasCPU: true, // 25 µs/tx
	}
	b.results[resultKey{mode: "simple", clients: 10, target: targetSluiceTLS}] = runResult{
		bench: pgbenchResult{tps: 14400, latencyMS: 0.694, processed: 144000}, cpuSec: 5.76, hasCPU: true, // 40 µs/tx
	}
	b.targets = []*target{
		{name: targetPgBouncerTLS, tlsNegotiated: "TLSv1.3, TLS_AES_256_GCM_SHA384"},
		{name: targetSluiceTLS, tlsNegotiated: "TLSv1.3, TLS_AES_128_GCM_SHA256"},
	}
	report := b.markdown()
	got := tableLines(t, report)
	want := []string{
		"| clients | direct TPS | direct lat ms | pgbouncer TPS | pgbouncer lat ms | sluice TPS | sluice lat ms | pgbouncer-tls TPS | pgbouncer-tls lat ms | " +
			"sluice-tls TPS | sluice-tls lat ms | sluice/pgbouncer TPS | sluice-tls/pgbouncer-tls TPS | sluice CPU µs/tx | pgbouncer CPU µs/tx | " +
			"sluice-tls CPU µs/tx | pgbouncer-tls CPU µs/tx | sluice/pgbouncer CPU | sluice-tls/pgbouncer-tls CPU | sluice-tls/sluice CPU |",
		"|" + strings.Repeat(" ---: |", 20),
		"| 10 | 40000 | 0.250 | 20000 | 0.500 | 18000 | 0.550 | 16000 | 0.625 | 14400 | 0.694 | 0.90 | 0.90 | 30.0 | 20.0 | 40.0 | 25.0 | 1.50 | 1.60 | 1.33 |",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range []string{
		"(md5 authentication, no TLS except to the TLS targets below)",
		"exceed the server's max_connections of 300; the TLS targets run in -M simple only.",
		"pgbench connects to them with `PGSSLMODE=require`",
		"\"sluice-tls/sluice CPU\" is what a TLS pairing costs Sluice over a plaintext one.",
		"negotiated (`openssl s_client -starttls postgres`; pgbench's libpq uses OpenSSL): " +
			"pgbouncer-tls TLSv1.3, TLS_AES_256_GCM_SHA384; sluice-tls TLSv1.3, TLS_AES_128_GCM_SHA256.",
		"Added latency at 1 client vs direct", // no 1-client run: absent
	} {
		if strings.HasPrefix(s, "Added") {
			if strings.Contains(report, s) {
				t.Errorf("the report has %q without a 1-client run", s)
			}
			continue
		}
		if !strings.Contains(report, s) {
			t.Errorf("the report lacks %q:\n%s", s, report)
		}
	}
	// Without TLS targets neither the table nor its description has
	// them (the targets paragraph keeps the TLS goal, not measured).
	report = reportBench(targetDirect, targetPgBouncer, targetSluice).markdown()
	if table := strings.Join(tableLines(t, report), "\n"); strings.Contains(table, "tls") ||
		strings.Contains(report, "PGSSLMODE") || strings.Contains(report, "TLS targets") {
		t.Errorf("a report without TLS targets describes them:\n%s", report)
	}
}

// A TLS target is run in tlsModes only; other modes show "-" without
// touching the proxy.
func TestRunOneTLSModes(t *testing.T) {
	b := reportBench(targetSluiceTLS)
	tt := &target{name: targetSluiceTLS, modes: tlsModes, broken: errNoTPS}
	if r := b.runOne(context.Background(), tt, "prepared", 10); r.skip != "-" {
		t.Errorf("-M prepared on a TLS target: %+v, want skipped with -", r)
	}
	// In a mode it runs in, it is tried (and here fails: broken).
	if r := b.runOne(context.Background(), tt, "simple", 10); r.skip != "" || r.err != errNoTPS {
		t.Errorf("-M simple on a TLS target: %+v, want the target's error", r)
	}
}
