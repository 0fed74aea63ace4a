package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/discovery/consultest"
)

// The failover modes: who tells Sluice that the replica is the new writer.
const (
	// modeDiscovery is promotion = "discovery": Consul is updated after
	// the promotion and names the new writer; the probes only fence.
	modeDiscovery = "discovery"
	// modeProbe is promotion = "probe": Consul is never told, the probes
	// find the promoted replica.
	modeProbe = "probe"
)

var allFailoverModes = []string{modeDiscovery, modeProbe}

// targetFailoverSeconds is the target for the median time from promotion
// to the first write on the new writer.
const targetFailoverSeconds = 1.0

// failoverOptions are the flags of `sluice-bench failover`.
type failoverOptions struct {
	runs     int
	modes    []string
	writers  int
	idle     int
	poolSize int
	interval time.Duration // health_check_interval
	load     time.Duration // write load before the primary is stopped
	after    time.Duration // write load after the first write on the new writer
	execMode string        // pgx QueryExecMode of the clients
	out      string
	logPath  string
}

// parseFailoverFlags parses the arguments of `sluice-bench failover`.
func parseFailoverFlags(args []string, stderr io.Writer) (failoverOptions, error) {
	fs := flag.NewFlagSet("sluice-bench failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./cmd/sluice-bench failover [flags]\n\n"+
			"Runs failover under load: write transactions through Sluice while the primary stops\n"+
			"(immediate shutdown) and its replica is promoted, and prints a markdown report.\n\nFlags:")
		fs.PrintDefaults()
	}
	var o failoverOptions
	modes := fs.String("modes", "discovery,probe", "comma-separated promotion modes: discovery (Consul told after the promotion), probe (Consul never told)")
	fs.IntVar(&o.runs, "runs", 5, "runs per mode, each with a fresh primary and replica")
	fs.IntVar(&o.writers, "writers", 50, "client connections running write transactions")
	fs.IntVar(&o.idle, "idle", 20, "client connections idle during the failover")
	fs.IntVar(&o.poolSize, "pool", 20, "Sluice's pool.max_connections")
	fs.DurationVar(&o.interval, "health-check-interval", time.Second, "the cluster's health_check_interval")
	fs.DurationVar(&o.load, "load", time.Second, "write load before the primary is stopped")
	fs.DurationVar(&o.after, "after", 500*time.Millisecond, "write load after the first write on the new writer")
	fs.StringVar(&o.execMode, "exec-mode", "exec", "pgx query mode of the clients: exec (unnamed statements) or cache (pgx's default statement cache)")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	fs.StringVar(&o.logPath, "log", filepath.Join(os.TempDir(), "sluice-failover.log"), "file for Sluice's log")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	for _, m := range splitList(*modes) {
		if !slices.Contains(allFailoverModes, m) {
			errs = append(errs, fmt.Errorf("-modes: %q is not one of %s", m, strings.Join(allFailoverModes, ", ")))
			continue
		}
		if !slices.Contains(o.modes, m) {
			o.modes = append(o.modes, m)
		}
	}
	if len(o.modes) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("-modes: give at least one mode"))
	}
	if o.runs < 1 || o.writers < 1 || o.idle < 0 || o.poolSize < 1 {
		errs = append(errs, errors.New("-runs, -writers and -pool must be at least 1, -idle at least 0"))
	}
	if o.interval < 10*time.Millisecond || o.load < 100*time.Millisecond || o.after < 0 {
		errs = append(errs, errors.New("-health-check-interval must be at least 10ms, -load at least 100ms, -after not negative"))
	}
	if o.execMode != "exec" && o.execMode != "cache" {
		errs = append(errs, fmt.Errorf("-exec-mode: %q is not exec or cache", o.execMode))
	}
	return o, errors.Join(errs...)
}

// failoverBench is one `sluice-bench failover` session: a Consul agent
// shared by the runs, and their results. It is used by one goroutine.
type failoverBench struct {
	opts    failoverOptions
	log     io.Writer
	sluice  *zap.Logger // Sluice's log, to opts.logPath
	agent   *consultest.Agent
	workDir string
	results map[string][]failoverRun
	notes   []string
	env     failoverEnv
}

// failoverEnv describes where the runs happened.
type failoverEnv struct {
	started    time.Time
	cpus       int
	cpuModel   string
	memory     string
	os         string
	kernel     string
	goVersion  string
	postgres   string
	consul     string
	sluiceRev  string
	loadBefore string
	loadAfter  string
}

func (f *failoverBench) logf(format string, args ...any) {
	fmt.Fprintf(f.log, "sluice-bench failover: "+format+"\n", args...)
}

// runFailover is `sluice-bench failover`.
func runFailover(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFailoverFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice-bench failover: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	f := &failoverBench{opts: opts, log: stderr, results: map[string][]failoverRun{}}
	defer f.cleanup()
	if err := f.setup(ctx); err != nil {
		fmt.Fprintf(stderr, "sluice-bench failover: %v\n", err)
		return 1
	}
	// Alternate the modes run by run, so that drift on the machine
	// affects both alike.
	for i := 1; i <= opts.runs && ctx.Err() == nil; i++ {
		for _, mode := range opts.modes {
			if ctx.Err() != nil {
				break
			}
			r := f.runOnce(ctx, mode, i)
			if ctx.Err() != nil {
				break // interrupted: the run is not counted
			}
			f.results[mode] = append(f.results[mode], r)
			if r.err != nil {
				f.logf("%-9s run %d: failed: %v", mode, i, r.err)
				f.notes = append(f.notes, fmt.Sprintf("%s run %d failed: %v", mode, i, r.err))
				continue
			}
			f.logf("%-9s run %d: promotion to first write %s, %d failed tx, %d committed, idle kept %d/%d",
				mode, i, seconds(r.toFirstWrite), r.failed, r.committed, r.idleKept, r.idle)
		}
	}
	f.env.loadAfter = loadAverage()
	if ctx.Err() != nil {
		f.notes = append(f.notes, "Interrupted: the results are incomplete.")
	}
	report := f.markdown()
	fmt.Fprint(stdout, report)
	if opts.out != "" {
		if err := os.WriteFile(opts.out, []byte(report), 0o644); err != nil {
			fmt.Fprintf(stderr, "sluice-bench failover: writing -out: %v\n", err)
			return 1
		}
	}
	if ctx.Err() != nil {
		return 130
	}
	return 0
}

// setup opens Sluice's log and starts the Consul agent the runs share.
func (f *failoverBench) setup(ctx context.Context) error {
	f.env = failoverEnv{
		started:    time.Now(),
		cpus:       runtime.NumCPU(),
		cpuModel:   procField("/proc/cpuinfo", "model name"),
		memory:     procField("/proc/meminfo", "MemTotal"),
		os:         osRelease(),
		kernel:     readTrimmed("/proc/sys/kernel/osrelease"),
		goVersion:  runtime.Version(),
		loadBefore: loadAverage(),
	}
	if root, err := moduleRoot(ctx); err == nil {
		f.env.sluiceRev = sourceRevision(ctx, root)
	}
	zc := zap.NewProductionConfig()
	zc.OutputPaths = []string{f.opts.logPath}
	zc.ErrorOutputPaths = []string{f.opts.logPath}
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		return fmt.Errorf("opening -log %s: %w", f.opts.logPath, err)
	}
	f.sluice = log
	f.logf("Sluice logs to %s", f.opts.logPath)

	if f.workDir, err = os.MkdirTemp("", "sluice-failover-"); err != nil {
		return err
	}
	f.logf("starting a Consul agent")
	f.agent, err = consultest.StartAgent(consultest.Options{Dir: filepath.Join(f.workDir, "consul")})
	if err != nil {
		return err
	}
	if c, err := f.agent.NewClient(); err == nil {
		if self, err := c.Agent().Self(); err == nil {
			if v, ok := self["Config"]["Version"].(string); ok {
				f.env.consul = v
			}
		}
	}
	return ctx.Err()
}

// cleanup stops the agent and removes the work directory; it is safe
// after a partial setup.
func (f *failoverBench) cleanup() {
	if f.agent != nil {
		f.agent.Stop()
	}
	if f.workDir != "" {
		_ = os.RemoveAll(f.workDir)
	}
	if f.sluice != nil {
		_ = f.sluice.Sync()
	}
}
