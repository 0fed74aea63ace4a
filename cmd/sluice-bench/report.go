package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicedb/sluice/core/config"
)

// machine describes where the benchmark ran.
type machine struct {
	cpus      int
	cpuModel  string
	memory    string
	kernel    string
	os        string
	goVersion string
	postgres  string
	pgbench   string
	pgbouncer string
	sluiceRev string
	fileLimit string
	// loadBefore and loadAfter are /proc/loadavg before and after the runs:
	// other work on the machine skews the numbers.
	loadBefore string
	loadAfter  string
}

// describeMachine gathers the machine description; parts it cannot read
// are left empty.
func describeMachine(ctx context.Context, pgPort int, root string) machine {
	m := machine{
		cpus:       runtime.NumCPU(),
		cpuModel:   procField("/proc/cpuinfo", "model name"),
		memory:     procField("/proc/meminfo", "MemTotal"),
		kernel:     readTrimmed("/proc/sys/kernel/osrelease"),
		goVersion:  runtime.Version(),
		pgbouncer:  pgbouncerVersion(ctx),
		sluiceRev:  sourceRevision(ctx, root),
		loadBefore: loadAverage(),
	}
	if v := osRelease(); v != "" {
		m.os = v
	}
	if v, err := querySingle(ctx, pgPort, "SHOW server_version"); err == nil {
		m.postgres = v
	}
	if out, err := runClient(ctx, 10*time.Second, "pgbench", "--version"); err == nil {
		m.pgbench = strings.TrimSpace(out)
	}
	if out, err := runClient(ctx, 10*time.Second, "sh", "-c", "ulimit -n"); err == nil {
		m.fileLimit = strings.TrimSpace(out)
	}
	return m
}

// procField returns the value of the first "name: value" line of a /proc
// file such as /proc/cpuinfo.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// osRelease returns PRETTY_NAME from /etc/os-release.
func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	f := strings.Fields(readTrimmed("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// clockTicks returns the kernel's clock ticks per second (the unit of
// /proc/<pid>/stat CPU times) from `getconf CLK_TCK`, or 100, the value on
// every Linux platform Go supports, if it cannot be read.
func clockTicks(ctx context.Context) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}

// markdown renders the report: the setup, one table, the syscall and idle
// stages, the targets, the reader endpoint's and the filter's sections, the
// added latency at one client, the proxies' memory, the machine and the
// notes.
func (b *bench) markdown() string {
	var w strings.Builder
	o := b.opts
	fmt.Fprintf(&w, "## Sluice benchmark: pgbench -S, scale %d, pool %d, transaction mode\n\n", o.scale, o.poolSize)
	hasTLS := slices.Contains(o.targets, targetPgBouncerTLS) || slices.Contains(o.targets, targetSluiceTLS)
	tlsNote, tlsDash := "no TLS", ""
	if hasTLS {
		tlsNote = "no TLS except to the TLS targets below"
		tlsDash = fmt.Sprintf("; the TLS targets run in -M %s only", strings.Join(tlsModes, ", "))
	}
	fmt.Fprintf(&w, "Each cell is one `pgbench -S -n -T %d -c <clients> -j %d -M <mode>` run over TCP on loopback (md5 authentication, %s), "+
		"after an unmeasured %s warm-up run. TPS excludes initial connection time; latency is pgbench's average. "+
		"CPU is the proxy process's user+system time over the whole pgbench run (connecting the clients included) "+
		"divided by the transactions processed, in µs; \"x/pgbouncer\" columns are a Sluice target's TPS, or CPU per transaction, over PgBouncer's in the same row. "+
		"\"-\": direct runs above %d clients exceed the server's max_connections of %d%s.\n\n",
		wholeSeconds(o.duration), o.threads, tlsNote, o.warmup, directClientLimit, serverMaxConnections, tlsDash)
	switch {
	case slices.Contains(o.targets, targetSluice) && slices.Contains(o.targets, targetSluiceGoroutine):
		fmt.Fprintf(&w, "\"sluice\" runs the loop engine (`engine = %q`, event loops for plaintext clients, `event_loops` left at its default); "+
			"\"sluice-goroutine\" is the same executable and configuration with `engine = %q` (a goroutine per client). The two take turns going first.\n\n",
			config.EngineLoop, config.EngineGoroutine)
	case slices.Contains(o.targets, targetSluice):
		fmt.Fprintf(&w, "\"sluice\" runs the loop engine (`engine = %q`, `event_loops` left at its default).\n\n", config.EngineLoop)
	case slices.Contains(o.targets, targetSluiceGoroutine):
		fmt.Fprintf(&w, "\"sluice-goroutine\" runs the goroutine engine (`engine = %q`).\n\n", config.EngineGoroutine)
	}
	if hasTLS {
		b.writeTLSTargets(&w)
	}
	hasSluiceBaseline := slices.Contains(o.targets, targetSluice) && slices.Contains(o.targets, targetBaseline)
	switch {
	case hasSluiceBaseline:
		w.WriteString("\"baseline\" is a second Sluice executable configured exactly like \"sluice\"; the two take turns going first. " +
			"\"sluice/baseline CPU\" is sluice's CPU time per transaction over baseline's: below 1 means sluice costs less.\n\n")
	case slices.Contains(o.targets, targetBaseline):
		w.WriteString("\"baseline\" is a second Sluice executable configured exactly like \"sluice\".\n\n")
	}

	multiMode := len(o.modes) > 1
	header := []string{"clients"}
	if multiMode {
		header = []string{"mode", "clients"}
	}
	// The reader endpoint and the filter have sections of their own.
	tableTargets := slices.DeleteFunc(slices.Clone(o.targets), func(t string) bool { return t == targetReader || t == targetFilter })
	for _, t := range tableTargets {
		header = append(header, t+" TPS", t+" lat ms")
	}
	// Each Sluice target against PgBouncer, TPS and CPU per transaction;
	// then sluice against baseline, CPU; then sluice-tls against
	// pgbouncer-tls, TPS and CPU, and against plaintext sluice, CPU.
	var tpsRatios, cpuRatios []ratioColumn
	both := func(a, b string) bool { return slices.Contains(tableTargets, a) && slices.Contains(tableTargets, b) }
	for _, t := range sluiceTargets {
		if both(t, targetPgBouncer) {
			tpsRatios = append(tpsRatios, ratioColumn{t, targetPgBouncer})
			cpuRatios = append(cpuRatios, ratioColumn{t, targetPgBouncer})
		}
	}
	if hasSluiceBaseline {
		cpuRatios = append(cpuRatios, ratioColumn{targetSluice, targetBaseline})
	}
	if both(targetSluiceTLS, targetPgBouncerTLS) {
		tpsRatios = append(tpsRatios, ratioColumn{targetSluiceTLS, targetPgBouncerTLS})
		cpuRatios = append(cpuRatios, ratioColumn{targetSluiceTLS, targetPgBouncerTLS})
	}
	if both(targetSluiceTLS, targetSluice) {
		cpuRatios = append(cpuRatios, ratioColumn{targetSluiceTLS, targetSluice})
	}
	for _, c := range tpsRatios {
		header = append(header, c.label()+" TPS")
	}
	for _, t := range proxyTargets {
		if slices.Contains(o.targets, t) {
			header = append(header, t+" CPU µs/tx")
		}
	}
	for _, c := range cpuRatios {
		header = append(header, c.label()+" CPU")
	}
	writeRow(&w, header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---:"
	}
	writeRow(&w, sep)

	for _, mode := range o.modes {
		for _, clients := range o.clients {
			row := []string{strconv.Itoa(clients)}
			if multiMode {
				row = []string{mode, strconv.Itoa(clients)}
			}
			res := func(target string) (runResult, bool) {
				r, ok := b.results[resultKey{mode: mode, clients: clients, target: target}]
				return r, ok
			}
			for _, t := range tableTargets {
				r, ok := res(t)
				row = append(row, tpsCell(r, ok), latencyCell(r, ok))
			}
			for _, c := range tpsRatios {
				a, okA := res(c.a)
				d, okD := res(c.b)
				cell := ""
				if okA && okD && succeeded(a) && succeeded(d) && d.bench.tps > 0 {
					cell = fmt.Sprintf("%.2f", a.bench.tps/d.bench.tps)
				}
				row = append(row, orDash(cell))
			}
			for _, t := range proxyTargets {
				if slices.Contains(o.targets, t) {
					r, ok := res(t)
					row = append(row, cpuMicrosCell(r, ok, o.duration))
				}
			}
			for _, c := range cpuRatios {
				a, okA := res(c.a)
				d, okD := res(c.b)
				cell := ""
				if okA && okD {
					cell = cpuRatio(a, d, o.duration)
				}
				row = append(row, orDash(cell))
			}
			writeRow(&w, row)
		}
	}
	w.WriteString("\n")
	b.writeSyscalls(&w)
	b.writeIdle(&w)
	b.writeGoals(&w)
	b.writeReader(&w)
	b.writeFilter(&w)
	b.writeAddedLatency(&w)
	b.writeMemory(&w)
	b.writeMachine(&w)
	if len(b.notes) > 0 {
		w.WriteString("\nNotes and problems:\n")
		for _, n := range b.notes {
			fmt.Fprintf(&w, "- %s\n", indent(n, "  ")[2:])
		}
	}
	return w.String()
}

// writeTLSTargets describes the TLS targets under the main table's
// heading: how they differ from their plaintext twins, what their ratio
// columns mean and what an OpenSSL client negotiated with them.
func (b *bench) writeTLSTargets(w *strings.Builder) {
	o := b.opts
	w.WriteString("\"pgbouncer-tls\" and \"sluice-tls\" (-tls) are pgbouncer and sluice, same executables and configuration, plus a listener " +
		"that requires TLS (PgBouncer `client_tls_sslmode = require`, Sluice `require_tls = true` with a `tls` block) presenting a throwaway CA's " +
		"ECDSA P-256 certificate; pgbench connects to them with `PGSSLMODE=require`, so every run of theirs that succeeds is a TLS pairing " +
		"(the harness checks that a plaintext login is refused). Their connections to PostgreSQL stay plaintext. The two take turns going first.")
	if slices.Contains(o.targets, targetSluiceTLS) && slices.Contains(o.targets, targetPgBouncerTLS) {
		w.WriteString(" \"sluice-tls/pgbouncer-tls\" compares the two TLS pairings")
		if slices.Contains(o.targets, targetSluice) {
			w.WriteString("; \"sluice-tls/sluice CPU\" is what a TLS pairing costs Sluice over a plaintext one")
		}
		w.WriteString(".")
	}
	var negotiated []string
	for _, t := range b.targets {
		if t.tlsNegotiated != "" {
			negotiated = append(negotiated, t.name+" "+t.tlsNegotiated)
		}
	}
	if len(negotiated) > 0 {
		fmt.Fprintf(w, " What an OpenSSL client with its defaults negotiated (`openssl s_client -starttls postgres`; pgbench's libpq uses OpenSSL): %s.",
			strings.Join(negotiated, "; "))
	}
	w.WriteString("\n\n")
}

// writeReader writes the reader endpoint's section: per mode and client
// count, Sluice's writer listener (the sluice target, one server) next to
// its reader listener over the replicas.
func (b *bench) writeReader(w *strings.Builder) {
	o := b.opts
	if !slices.Contains(o.targets, targetReader) {
		return
	}
	fmt.Fprintf(w, "Reader endpoint: the same pgbench -S runs through a Sluice whose listener has role = \"reader\", in front of %d streaming "+
		"replicas of the server (pool %d per replica, so up to %d server connections), next to the sluice target above (the writer, "+
		"one server, pool %d). The replicas run on the same machine as the primary and share its CPUs.\n\n",
		readerReplicas, o.poolSize, readerReplicas*o.poolSize, o.poolSize)
	writeRow(w, []string{"mode", "clients", "sluice writer TPS", "sluice writer lat ms", "reader TPS", "reader lat ms", "reader/writer TPS", "reader CPU µs/tx"})
	writeRow(w, []string{"---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"})
	for _, mode := range o.modes {
		for _, clients := range o.clients {
			s, okS := b.results[resultKey{mode: mode, clients: clients, target: targetSluice}]
			r, okR := b.results[resultKey{mode: mode, clients: clients, target: targetReader}]
			ratio := ""
			if okS && okR && succeeded(s) && succeeded(r) && s.bench.tps > 0 {
				ratio = fmt.Sprintf("%.2f", r.bench.tps/s.bench.tps)
			}
			writeRow(w, []string{mode, strconv.Itoa(clients), tpsCell(s, okS), latencyCell(s, okS), tpsCell(r, okR), latencyCell(r, okR),
				orDash(ratio), cpuMicrosCell(r, okR, o.duration)})
		}
	}
	w.WriteString("\n")
}

// writeAddedLatency writes, per mode, how much average latency each proxy
// adds to a direct connection at one client.
func (b *bench) writeAddedLatency(w *strings.Builder) {
	if !slices.Contains(b.opts.clients, 1) {
		return
	}
	for _, mode := range b.opts.modes {
		direct, ok := b.results[resultKey{mode: mode, clients: 1, target: targetDirect}]
		if !ok || !succeeded(direct) {
			continue
		}
		var parts []string
		for _, t := range proxyTargets {
			r, ok := b.results[resultKey{mode: mode, clients: 1, target: t}]
			if ok && succeeded(r) {
				parts = append(parts, fmt.Sprintf("%s %+.0f µs", t, (r.bench.latencyMS-direct.bench.latencyMS)*1000))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "Added latency at 1 client vs direct (-M %s, direct %.3f ms): %s\n\n",
				mode, direct.bench.latencyMS, strings.Join(parts, ", "))
		}
	}
}

// writeMemory writes the proxies' resident memory: idle after start, and
// during the run with the most clients (simple mode if it ran).
func (b *bench) writeMemory(w *strings.Builder) {
	clients := slices.Max(b.opts.clients)
	mode := b.opts.modes[0]
	if slices.Contains(b.opts.modes, "simple") {
		mode = "simple"
	}
	var during, idle []string
	for _, t := range b.targets {
		if t.start == nil || t.idleRSSKiB == 0 {
			continue
		}
		idle = append(idle, fmt.Sprintf("%s %s", t.name, mib(t.idleRSSKiB)))
		r, ok := b.results[resultKey{mode: mode, clients: clients, target: t.name}]
		if ok && r.rssKiB > 0 {
			during = append(during, fmt.Sprintf("%s %s (peak since start %s)", t.name, mib(r.rssKiB), mib(r.peakKiB)))
		}
	}
	if len(during) > 0 {
		fmt.Fprintf(w, "RSS at the end of the %d-client -M %s run (VmRSS, last sampled while pgbench ran): %s\n\n",
			clients, mode, strings.Join(during, "; "))
	}
	if len(idle) > 0 {
		fmt.Fprintf(w, "RSS right after start, before any run: %s\n\n", strings.Join(idle, "; "))
	}
}

// writeMachine writes the machine description.
func (b *bench) writeMachine(w *strings.Builder) {
	m := b.machine
	w.WriteString("Machine:\n")
	item := func(name, value string) {
		if value != "" {
			fmt.Fprintf(w, "- %s: %s\n", name, value)
		}
	}
	item("CPUs (nproc)", strconv.Itoa(m.cpus))
	item("CPU model", m.cpuModel)
	item("memory", m.memory)
	item("OS", m.os)
	item("kernel", m.kernel)
	item("Go", m.goVersion)
	item("PostgreSQL", m.postgres)
	item("pgbench", m.pgbench)
	item("PgBouncer", m.pgbouncer)
	item("Sluice source", m.sluiceRev)
	// Name the two executables being compared.
	if slices.Contains(b.opts.targets, targetBaseline) {
		if slices.Contains(b.opts.targets, targetSluice) {
			item("Sluice executable", b.opts.sluiceBin)
		}
		item("baseline executable", b.opts.baselineBin)
	}
	item("open-file limit", m.fileLimit)
	if m.loadBefore != "" || m.loadAfter != "" {
		item("load average (1/5/15 min) before / after the runs", m.loadBefore+" / "+m.loadAfter)
	}
}

// succeeded reports whether r is a completed run.
func succeeded(r runResult) bool { return r.skip == "" && r.err == nil }

// tpsCell renders a TPS cell: the rate, "-" or "unsupported" for a run not
// made, "failed" for a failed run, "" for a run not reached.
func tpsCell(r runResult, ok bool) string {
	switch {
	case !ok:
		return ""
	case r.skip != "":
		return r.skip
	case r.err != nil:
		return "failed"
	}
	s := fmt.Sprintf("%.0f", r.bench.tps)
	if r.bench.failed > 0 {
		s += fmt.Sprintf(" (%d failed tx)", r.bench.failed)
	}
	return s
}

// latencyCell renders an average latency cell.
func latencyCell(r runResult, ok bool) string {
	switch {
	case !ok:
		return ""
	case !succeeded(r):
		return "-"
	}
	return fmt.Sprintf("%.3f", r.bench.latencyMS)
}

// proxyTargets are the targets whose CPU time is measured, in the order
// of their CPU columns.
var proxyTargets = []string{targetSluice, targetSluiceGoroutine, targetPgBouncer, targetBaseline, targetSluiceTLS, targetPgBouncerTLS}

// ratioColumn is a column of the main table with target a's TPS, or CPU
// time per transaction, over target b's in the same row.
type ratioColumn struct{ a, b string }

// label names the column, without its unit.
func (c ratioColumn) label() string { return c.a + "/" + c.b }

// sluiceTargets are the main table's Sluice targets, each compared with
// PgBouncer.
var sluiceTargets = []string{targetSluice, targetSluiceGoroutine, targetBaseline}

// cpuPerTx returns a proxy's CPU seconds per transaction: CPU time over the
// transactions pgbench processed, or tps × duration if it did not say;
// false if the run failed or either is unknown.
func cpuPerTx(r runResult, duration time.Duration) (float64, bool) {
	if !succeeded(r) || !r.hasCPU {
		return 0, false
	}
	tx := float64(r.bench.processed)
	if tx == 0 {
		tx = r.bench.tps * float64(wholeSeconds(duration))
	}
	if tx <= 0 {
		return 0, false
	}
	return r.cpuSec / tx, true
}

// cpuRatio renders a's CPU time per transaction over b's, from the
// unrounded values; "" if either is unknown or b's is zero.
func cpuRatio(a, b runResult, duration time.Duration) string {
	perA, okA := cpuPerTx(a, duration)
	perB, okB := cpuPerTx(b, duration)
	if !okA || !okB || perB <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", perA/perB)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// mib renders KiB as MiB.
func mib(kib int64) string {
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

func writeRow(w *strings.Builder, cells []string) {
	w.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}
