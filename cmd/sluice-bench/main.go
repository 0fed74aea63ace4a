// Command sluice-bench measures what Sluice costs in front of PostgreSQL,
// next to PgBouncer and to connecting directly, with pgbench's select-only
// workload.
//
//	go run ./cmd/sluice-bench [-clients 1,10,100,1000] [-duration 10s] [-warmup 2s]
//	                          [-modes simple[,extended,prepared]] [-out FILE]
//	                          [-sluice-bin PATH] [-baseline-bin PATH] [-reader] [-filter]
//	                          [-tls] [-syscalls] [-idle N]
//
// It starts a throwaway PostgreSQL 15 server (package pgtest), loads it with
// `pgbench -i`, builds Sluice from the working tree and starts it twice and
// PgBouncer in front of the server as separate processes, all with the same
// pool size and transaction pooling: "sluice" with the loop engine (engine =
// "loop") and "sluice-goroutine" with the goroutine engine. It then runs
// `pgbench -S` against each target, interleaved per client count (direct,
// pgbouncer, sluice, sluice-goroutine for one client count, then the next;
// the two engines take turns going first) so that drift affects all of them
// alike, reads the proxies' CPU time and memory from /proc, and prints one
// markdown table with the machine it ran on to standard output, with each
// engine's TPS and CPU per transaction over PgBouncer's and the issue's
// targets evaluated for both engines. Progress goes to standard error.
//
// With -syscalls, after those runs, it attaches `strace -c -f` to
// PgBouncer and to each Sluice in turn during a pgbench -S -M simple run at
// 10 and then 100 clients and reports their system calls (and failed ones)
// per transaction. With -idle N it then opens N authenticated clients to
// each of them, each served one SELECT 1 and left idle, and reports the
// proxy's resident memory per idle client.
//
// With -tls it also runs the TLS twins of PgBouncer and Sluice, the
// targets "pgbouncer-tls" and "sluice-tls": the same processes and
// configuration plus a listener that requires TLS with a throwaway CA's ECDSA
// P-256 certificate the harness makes, pgbench connecting with
// sslmode=require (the proxies' connections to PostgreSQL stay plaintext).
// They run in -M simple only, in the same interleaved rounds, and the table
// gains their columns with sluice-tls's TPS and CPU per transaction over
// pgbouncer-tls's and its CPU per transaction over plaintext sluice's. The
// idle stage measures them too, with TLS clients.
//
// With -baseline-bin it also runs a second Sluice executable, configured
// exactly like the first, as the target "baseline", so that two builds (a
// change and the code before it) are compared under the same conditions;
// the table then gains the ratio of their CPU time per transaction. The two
// take turns going first from one combination to the next, so that a steady
// drift favours neither.
//
// With -filter it builds the readwrite example filter
// (examples/filters/readwrite) and runs a second Sluice configured like
// the first plus that filter on the statement hook, as the target
// "sluice+readwrite", in a section of its own: its TPS over sluice's and
// both CPU times per transaction. The cluster has no replica and
// reader_fallback = "writer", so the filter's replica decisions run on the
// same server as sluice's statements and the difference is the filter's
// cost. After the pgbench runs it also runs the hook-cost Go benchmark
// (BenchmarkStatement in ./filters) and reports its median and p99.
//
// `sluice-bench failover` (make bench-failover) measures failover under
// load instead:
//
//	go run ./cmd/sluice-bench failover [-runs 5] [-modes discovery,probe] [-writers 50] [-idle 20]
//	                                   [-pool 20] [-health-check-interval 1s] [-out FILE]
//
// Each run starts a fresh primary and streaming replica, registered in a
// Consul agent the runs share, and a Sluice in this process whose cluster
// is that Consul service; write transactions run through it while the
// primary stops (immediate shutdown) and the replica is promoted, Consul
// told (promotion = "discovery") or not (promotion = "probe"). It prints
// per run the seconds from the promotion to the first write on the new
// writer, the failed transactions and the idle clients kept, with the
// medians, as markdown.
//
// A run that fails or exceeds its duration by a minute shows "failed" and the
// harness continues. Everything it starts is stopped, and its temporary
// directories removed, when it ends, fails or is interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "failover" {
		return runFailover(args[1:], stdout, stderr)
	}
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	b := &bench{opts: opts, log: stderr, results: map[resultKey]runResult{}}
	defer b.cleanup()
	if err := b.setup(ctx); err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 1
	}
	b.runAll(ctx)
	if opts.syscalls && ctx.Err() == nil {
		b.runSyscalls(ctx)
	}
	if opts.idle > 0 && ctx.Err() == nil {
		b.runIdle(ctx)
	}
	if slices.Contains(opts.targets, targetFilter) && ctx.Err() == nil {
		b.runHookBenchmark(ctx)
	}
	b.machine.loadAfter = loadAverage()
	if ctx.Err() != nil {
		b.notef("Interrupted: the table is incomplete.")
	}
	report := b.markdown()
	fmt.Fprint(stdout, report)
	if opts.out != "" {
		if err := os.WriteFile(opts.out, []byte(report), 0o644); err != nil {
			fmt.Fprintf(stderr, "sluice-bench: writing -out: %v\n", err)
			return 1
		}
	}
	if ctx.Err() != nil {
		return 130
	}
	return 0
}

// directClientLimit is the largest client count run directly against the
// server, which allows serverMaxConnections.
const (
	serverMaxConnections = 300
	directClientLimit    = 250
)

// bench is one benchmark session: the server, the targets in front of it
// and the results. It is used by one goroutine.
type bench struct {
	opts    options
	log     io.Writer
	workDir string // temporary directory holding the proxies' files
	server  *pgtest.Server
	// replicas are streaming replicas of server, started for targetReader.
	replicas []*pgtest.Server
	// moduleRoot is the Sluice module's root directory, where the filter
	// is built from and its hook benchmark run; "" if unknown.
	moduleRoot string
	// filterModule is the readwrite filter's .wasm, built for
	// targetFilter.
	filterModule string
	targets      []*target
	results      map[resultKey]runResult
	// syscalls are the strace runs (-syscalls), in the order made.
	syscalls []syscallRun
	// idle are the idle-client measurements (-idle), in the order made.
	idle    []idleResult
	hook    hookResult // the hook-cost benchmark (-filter)
	notes   []string   // problems and remarks for the report
	machine machine
	clkTck  int64
}

// resultKey names one measured run.
type resultKey struct {
	mode    string
	clients int
	target  string
}

// runResult is the outcome of one measured run.
type runResult struct {
	skip    string // why the run was not made ("-", "unsupported"); "" if it was
	err     error  // why the run failed; nil if it succeeded
	bench   pgbenchResult
	cpuSec  float64 // CPU time the proxy used during the run
	hasCPU  bool
	rssKiB  int64 // the proxy's resident memory, last sampled while pgbench ran
	peakKiB int64 // the proxy's peak resident memory since it started
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "sluice-bench: "+format+"\n", args...)
}

// verbose returns where to copy pgbench's output, or nil.
func (b *bench) verbose() io.Writer {
	if b.opts.verbose {
		return b.log
	}
	return nil
}

// notef adds a line to the report's notes.
func (b *bench) notef(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// setup starts and loads the server and starts the proxies. Only a server
// that cannot be prepared is fatal; a proxy that cannot be started is
// marked broken and its cells show "failed".
func (b *bench) setup(ctx context.Context) error {
	limit, err := raiseFileLimit()
	if err != nil {
		b.notef("%v", err)
	}
	if need := uint64(slices.Max(b.opts.clients))*2 + 100; limit < need {
		b.notef("open-file limit %d may be too low for %d clients (pgbench and each proxy hold one socket per client)", limit, slices.Max(b.opts.clients))
	}
	if need := uint64(b.opts.idle) + idleClientMargin; b.opts.idle > 0 && limit < need {
		b.notef("open-file limit %d may be too low for %d idle clients (the harness and the proxy hold one socket per client)", limit, b.opts.idle)
	}
	b.clkTck = clockTicks(ctx)

	b.workDir, err = os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return err
	}
	// The unprivileged user PgBouncer runs as must reach its subdirectory.
	if err := os.Chmod(b.workDir, 0o711); err != nil {
		return err
	}

	// Build Sluice and the filter first: a compile error is reported
	// without waiting for the data load.
	var sluiceBin, root string
	var buildErr, filterErr error
	if slices.ContainsFunc(b.opts.targets, runsSluiceBinary) {
		if sluiceBin = b.opts.sluiceBin; sluiceBin == "" {
			b.logf("building ./cmd/sluice")
			sluiceBin = filepath.Join(b.workDir, "sluice-binary")
			root, buildErr = buildSluice(ctx, sluiceBin)
		}
	}
	if slices.Contains(b.opts.targets, targetFilter) {
		if b.moduleRoot = root; b.moduleRoot == "" {
			b.moduleRoot, filterErr = moduleRoot(ctx)
		}
		if filterErr == nil {
			b.logf("building %s", filterDir)
			b.filterModule = filepath.Join(b.workDir, "readwrite.wasm")
			filterErr = buildFilter(ctx, b.moduleRoot, b.filterModule)
		}
	}

	b.logf("starting PostgreSQL")
	b.server, err = pgtest.StartServer(pgtest.Options{
		AuthMethod: pgtest.AuthMD5,
		Settings: map[string]string{
			"max_connections": strconv.Itoa(serverMaxConnections),
			"shared_buffers":  "128MB",
		},
	})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	if err := b.server.CreateRole(ctx, benchUser, benchPassword); err != nil {
		return err
	}
	if err := b.server.CreateDatabase(ctx, benchDatabase, benchUser); err != nil {
		return err
	}
	b.logf("loading pgbench scale %d", b.opts.scale)
	if _, err := runClient(ctx, 30*time.Minute, "pgbench", "-i", "-q", "-s", strconv.Itoa(b.opts.scale),
		"-h", loopback, "-p", strconv.Itoa(b.server.Port()), "-U", benchUser, benchDatabase); err != nil {
		return fmt.Errorf("loading pgbench data: %w", err)
	}
	if err := b.server.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	b.machine = describeMachine(ctx, b.server.Port(), root)
	var replicaErr error
	if slices.Contains(b.opts.targets, targetReader) {
		replicaErr = b.startReplicas()
	}

	for _, name := range b.opts.targets {
		t, err := b.newTarget(name, sluiceBin)
		if err == nil && buildErr != nil && runsSluiceBinary(name) {
			err = buildErr
		}
		if err == nil && filterErr != nil && name == targetFilter {
			err = filterErr
		}
		if err == nil && replicaErr != nil && name == targetReader {
			err = replicaErr
		}
		if err == nil && t.start != nil {
			b.logf("starting %s on port %d", name, t.port)
			err = t.launch(ctx)
		}
		if err != nil {
			t.broken = fmt.Errorf("%s could not be started: %w", name, err)
			b.notef("%v", t.broken)
			b.logf("%v", t.broken)
		}
		b.targets = append(b.targets, t)
	}
	return ctx.Err()
}

// runsSluiceBinary reports whether the target called name runs the sluice
// executable (built from the working tree unless -sluice-bin is given).
func runsSluiceBinary(name string) bool {
	return name == targetSluice || name == targetSluiceGoroutine || name == targetReader || name == targetFilter || name == targetSluiceTLS
}

// newTarget describes the target called name; the proxies are not started
// yet.
func (b *bench) newTarget(name, sluiceBin string) (*target, error) {
	t := &target{name: name}
	if name == targetDirect {
		t.port = b.server.Port()
		t.maxClients = directClientLimit
		return t, nil
	}
	port, err := freePort()
	if err != nil {
		return t, err
	}
	t.port = port
	dir := filepath.Join(b.workDir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return t, err
	}
	// A TLS target presents a certificate of its own, in its directory.
	var certFile, keyFile string
	if name == targetPgBouncerTLS || name == targetSluiceTLS {
		if certFile, keyFile, err = writeServerCert(dir); err != nil {
			return t, err
		}
		t.sslmode = sslRequire
		t.modes = tlsModes
		// Every run that succeeds has used TLS; and say what pgbench's
		// TLS library negotiates.
		t.verify = func(ctx context.Context) error {
			refusal, err := verifyTLSRequired(ctx, port)
			if err != nil {
				return err
			}
			if b.opts.verbose {
				b.logf("%s refused a plaintext login, as it should: %v", name, refusal)
			}
			if t.tlsNegotiated != "" {
				return nil // known from an earlier start
			}
			v, err := opensslNegotiated(ctx, port)
			if err != nil {
				b.notef("%s: what an OpenSSL client negotiates is unknown: %v", name, err)
				v = "unknown"
			}
			t.tlsNegotiated = v
			return nil
		}
	}
	switch name {
	case targetPgBouncer, targetPgBouncerTLS:
		cred, err := unprivilegedCredential()
		if err != nil {
			return t, err
		}
		for _, path := range []string{dir, certFile, keyFile} {
			if path == "" {
				continue
			}
			if err := chownTo(path, cred); err != nil {
				return t, err
			}
		}
		t.start = pgbouncerSetup{dir: dir, port: port, pgPort: b.server.Port(), poolSize: b.opts.poolSize, cred: cred,
			maxClientConn: max(defaultMaxClientConn, b.opts.idle+idleClientMargin), certFile: certFile, keyFile: keyFile}.start
		t.unsupported = pgbouncerUnsupported
	case targetSluice, targetSluiceGoroutine, targetSluiceTLS:
		if t.adminPort, err = freePort(); err != nil {
			return t, err
		}
		engine := config.EngineLoop
		if name == targetSluiceGoroutine {
			engine = config.EngineGoroutine
		}
		t.start = sluiceSetup{name: name, dir: dir, binary: sluiceBin, port: port, pgAddr: b.server.Addr(), poolSize: b.opts.poolSize,
			engine: engine, adminPort: t.adminPort, certFile: certFile, keyFile: keyFile}.start
	case targetBaseline:
		// Configured exactly like sluice, engine included.
		t.start = sluiceSetup{name: name, dir: dir, binary: b.opts.baselineBin, port: port, pgAddr: b.server.Addr(), poolSize: b.opts.poolSize,
			engine: config.EngineLoop}.start
	case targetReader:
		var addrs []string
		for _, r := range b.replicas {
			addrs = append(addrs, r.Addr())
		}
		t.start = sluiceSetup{name: name, dir: dir, binary: sluiceBin, port: port, pgAddr: b.server.Addr(), poolSize: b.opts.poolSize,
			engine: config.EngineLoop, replicas: addrs}.start
		// A reader endpoint that answered from the primary would measure
		// the writer twice.
		t.verify = func(ctx context.Context) error {
			v, err := querySingle(ctx, port, "SELECT pg_catalog.pg_is_in_recovery()")
			if err != nil {
				return err
			}
			if v != "t" {
				return fmt.Errorf("the reader endpoint answered from a server not in recovery (pg_is_in_recovery() = %q)", v)
			}
			return nil
		}
	case targetFilter:
		t.start = sluiceSetup{name: name, dir: dir, binary: sluiceBin, port: port, pgAddr: b.server.Addr(), poolSize: b.opts.poolSize,
			engine: config.EngineLoop, filterModule: b.filterModule}.start
		t.verify = func(ctx context.Context) error { return verifyFilterRoutes(ctx, port) }
	}
	return t, nil
}

// readerReplicas is how many streaming replicas targetReader reads from.
const readerReplicas = 2

// startReplicas clones the loaded server into readerReplicas streaming
// replicas, with its settings.
func (b *bench) startReplicas() error {
	for i := range readerReplicas {
		b.logf("starting replica %d of %d", i+1, readerReplicas)
		r, err := b.server.StartReplica()
		if err != nil {
			return fmt.Errorf("starting replica %d: %w", i+1, err)
		}
		b.replicas = append(b.replicas, r)
	}
	return nil
}

// runAll runs every (client count, mode, target) combination, interleaving
// the targets per client count, until done or ctx ends.
func (b *bench) runAll(ctx context.Context) {
	combination := 0
	for _, clients := range b.opts.clients {
		for _, mode := range b.opts.modes {
			order := runOrder(b.targets, combination)
			combination++
			for _, t := range order {
				if ctx.Err() != nil {
					return
				}
				key := resultKey{mode: mode, clients: clients, target: t.name}
				r := b.runOne(ctx, t, mode, clients)
				if ctx.Err() != nil {
					return // interrupted: the cell stays empty
				}
				b.results[key] = r
				switch {
				case r.skip != "":
				case r.err != nil:
					b.logf("%-16s %-8s %4d clients: failed", t.name, mode, clients)
					// A broken target's reason is noted once, not per run.
					if t.broken == nil || r.err != t.broken {
						b.notef("%s, -M %s, %d clients: failed: %v", t.name, mode, clients, r.err)
					}
				default:
					b.logf("%-16s %-8s %4d clients: %8.0f tps, %.3f ms", t.name, mode, clients, r.bench.tps, r.bench.latencyMS)
				}
				if t.name == targetFilter && r.skip == "" {
					b.noteFilterFailures(t, mode, clients)
				}
			}
		}
	}
}

// runOrder returns the order in which to run targets for the combination
// with index i: their own order, except that for every other combination
// sluice swaps places with the last of the targets compared with it in a
// ratio (sluice-goroutine, baseline, sluice+readwrite), so that each of
// those runs after sluice in one combination and before it in the next;
// and pgbouncer-tls and sluice-tls swap places likewise.
func runOrder(targets []*target, i int) []*target {
	order := slices.Clone(targets)
	if i%2 == 0 {
		return order
	}
	index := func(name string) int { return slices.IndexFunc(order, func(t *target) bool { return t.name == name }) }
	s := index(targetSluice)
	last := -1
	for j, t := range order {
		if t.name == targetSluiceGoroutine || t.name == targetBaseline || t.name == targetFilter {
			last = j
		}
	}
	if s >= 0 && last >= 0 {
		order[s], order[last] = order[last], order[s]
	}
	if p, s := index(targetPgBouncerTLS), index(targetSluiceTLS); p >= 0 && s >= 0 {
		order[p], order[s] = order[s], order[p]
	}
	return order
}

// runOne runs one combination, or says why it is not run. A failed run's
// error includes what the proxy logged during it.
func (b *bench) runOne(ctx context.Context, t *target, mode string, clients int) runResult {
	if t.maxClients > 0 && clients > t.maxClients {
		return runResult{skip: "-"}
	}
	if _, ok := t.unsupported[mode]; ok {
		return runResult{skip: "unsupported"}
	}
	if t.modes != nil && !slices.Contains(t.modes, mode) {
		return runResult{skip: "-"}
	}
	note, err := t.check(ctx)
	if note != "" {
		b.notef("before %s, -M %s, %d clients: %s", t.name, mode, clients, note)
	}
	if err != nil {
		return runResult{err: err}
	}
	r := b.warmAndMeasure(ctx, t, mode, clients)
	if r.err != nil && t.proc != nil {
		if logged := t.proc.logSince(t.logMark); logged != "" {
			r.err = fmt.Errorf("%w\n  %s logged meanwhile:\n%s", r.err, t.name, indent(logged, "    "))
		}
	}
	return r
}

// warmAndMeasure makes the warm-up and the measured run of one
// combination.
func (b *bench) warmAndMeasure(ctx context.Context, t *target, mode string, clients int) runResult {
	if t.proc != nil {
		t.logMark = t.proc.logSize()
	}
	run := pgbenchRun{port: t.port, clients: clients, threads: b.opts.threads, mode: mode, duration: b.opts.duration, sslmode: t.sslmode}
	if b.opts.warmup > 0 {
		warm := run
		warm.duration = b.opts.warmup
		if _, err := runPgbench(ctx, warm, b.verbose()); err != nil {
			return runResult{err: fmt.Errorf("warm-up run: %w", err)}
		}
	}
	return b.measure(ctx, t, run)
}

// measure runs pgbench once and reads the proxy's CPU time before and after
// it and its memory while it runs.
func (b *bench) measure(ctx context.Context, t *target, run pgbenchRun) runResult {
	var r runResult
	if t.proc == nil {
		r.bench, r.err = runPgbench(ctx, run, b.verbose())
		return r
	}
	before, cpuErr := t.proc.cpuTicks()
	stopSampling := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		var last int64
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				sampled <- last
				return
			case <-tick.C:
				if rss, _, err := t.proc.memory(); err == nil {
					last = rss
				}
			}
		}
	}()
	r.bench, r.err = runPgbench(ctx, run, b.verbose())
	close(stopSampling)
	r.rssKiB = <-sampled
	after, err := t.proc.cpuTicks()
	if cpuErr == nil && err == nil && b.clkTck > 0 {
		r.cpuSec, r.hasCPU = float64(after-before)/float64(b.clkTck), true
	}
	if _, peak, err := t.proc.memory(); err == nil {
		r.peakKiB = peak
	}
	return r
}

// cleanup stops the proxies and the server and removes the temporary
// directories. It is safe after a partial setup.
func (b *bench) cleanup() {
	for _, t := range b.targets {
		t.stop()
	}
	for _, r := range b.replicas {
		if err := r.Stop(); err != nil {
			b.logf("stopping a replica: %v", err)
		}
	}
	if b.server != nil {
		if err := b.server.Stop(); err != nil {
			b.logf("stopping PostgreSQL: %v", err)
		}
	}
	if b.workDir != "" {
		if err := os.RemoveAll(b.workDir); err != nil {
			b.logf("removing %s: %v", b.workDir, err)
		}
	}
}

// freePort returns a TCP port on loopback that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// indent prefixes every line of s with prefix.
func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
