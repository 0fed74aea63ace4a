package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the command-line flags.
type options struct {
	clients   []int
	modes     []string
	targets   []string
	duration  time.Duration
	warmup    time.Duration
	scale     int
	poolSize  int
	threads   int
	out       string
	sluiceBin string
	// baselineBin is a second Sluice executable, run as the "baseline"
	// target with the same configuration as "sluice"; "" if none.
	baselineBin string
	verbose     bool
	// syscalls enables the strace stage: syscalls per transaction of
	// the proxies (-syscalls).
	syscalls bool
	// idle is how many idle clients the idle-memory stage opens per
	// proxy; 0 disables it (-idle).
	idle int
}

// pgbench -M modes the harness accepts.
var allModes = []string{"simple", "extended", "prepared"}

// allTargets are the targets the harness knows, in the order they are run
// and shown.
var allTargets = []string{targetDirect, targetPgBouncer, targetSluice, targetSluiceGoroutine, targetBaseline, targetPgBouncerTLS, targetSluiceTLS}

// defaultTargets are the targets run when -targets is not given; baseline
// is added when -baseline-bin is.
const defaultTargets = "direct,pgbouncer,sluice,sluice-goroutine"

// parseFlags parses args into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("sluice-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./cmd/sluice-bench [flags]\n\nRuns pgbench -S directly, through PgBouncer and through Sluice and prints a markdown table.\n\nFlags:")
		fs.PrintDefaults()
	}
	var o options
	clients := fs.String("clients", "1,10,100,1000", "comma-separated pgbench client counts")
	modes := fs.String("modes", "simple", "comma-separated pgbench -M query modes: simple, extended, prepared")
	targets := fs.String("targets", defaultTargets, "comma-separated targets to run: direct, pgbouncer, sluice (loop engine), sluice-goroutine (goroutine engine), baseline (baseline joins the default when -baseline-bin is given), pgbouncer-tls, sluice-tls (see -tls)")
	withTLS := fs.Bool("tls", false, "also run the TLS twin of pgbouncer and of sluice among the targets (pgbouncer-tls, sluice-tls: the same configuration plus a listener that requires TLS, pgbench with sslmode=require), in -M "+strings.Join(tlsModes, ", ")+" only, and in the idle stage with TLS clients")
	reader := fs.Bool("reader", false, "also run Sluice's reader endpoint in front of two streaming replicas (target \"reader\", a section of its own)")
	filter := fs.Bool("filter", false, "also run a Sluice with the readwrite example filter on the statement hook (target \"sluice+readwrite\") and the filter hook-cost Go benchmark, in sections of their own")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured pgbench run before each measured run; 0 disables")
	fs.IntVar(&o.scale, "scale", 10, "pgbench -i scale factor")
	fs.IntVar(&o.poolSize, "pool", 20, "server connections per pool, for PgBouncer and Sluice alike")
	fs.IntVar(&o.threads, "threads", 2, "pgbench -j worker threads")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	fs.StringVar(&o.sluiceBin, "sluice-bin", "", "use this sluice executable instead of building ./cmd/sluice")
	fs.StringVar(&o.baselineBin, "baseline-bin", "", "also run this second sluice executable, configured like sluice, as the target \"baseline\"")
	fs.BoolVar(&o.syscalls, "syscalls", false, "after the runs, count each proxy's system calls per transaction with strace -c -f -p during pgbench -S -M simple at 10 and 100 clients (needs root and "+straceBinary+")")
	fs.IntVar(&o.idle, "idle", 0, "after the runs, open this many authenticated idle clients to each proxy and report its resident memory per idle client; 0 disables")
	fs.BoolVar(&o.verbose, "v", false, "copy every pgbench command line and output to standard error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	for _, s := range splitList(*clients) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("-clients: %q is not a positive whole number", s))
			continue
		}
		o.clients = append(o.clients, n)
	}
	o.modes = splitList(*modes)
	for _, m := range o.modes {
		if !slices.Contains(allModes, m) {
			errs = append(errs, fmt.Errorf("-modes: %q is not one of %s", m, strings.Join(allModes, ", ")))
		}
	}
	targetList := splitList(*targets)
	if o.baselineBin != "" && !flagGiven(fs, "targets") {
		targetList = append(targetList, targetBaseline)
	}
	if *withTLS {
		twins := 0
		for _, t := range slices.Clone(targetList) {
			if twin, ok := tlsTwins[t]; ok {
				twins++
				if !slices.Contains(targetList, twin) {
					targetList = append(targetList, twin)
				}
			}
		}
		if twins == 0 {
			errs = append(errs, errors.New("-tls: give pgbouncer or sluice among the -targets (-tls adds their TLS twins)"))
		}
	}
	for _, t := range targetList {
		if !slices.Contains(allTargets, t) {
			errs = append(errs, fmt.Errorf("-targets: %q is not one of %s", t, strings.Join(allTargets, ", ")))
		}
	}
	// Keep the canonical order whatever order the flag lists them in.
	for _, t := range allTargets {
		if slices.Contains(targetList, t) {
			o.targets = append(o.targets, t)
		}
	}
	// The reader endpoint and the filter are run last, after the targets
	// of the main table.
	if *reader {
		o.targets = append(o.targets, targetReader)
	}
	if *filter {
		o.targets = append(o.targets, targetFilter)
	}
	if (slices.Contains(o.targets, targetPgBouncerTLS) || slices.Contains(o.targets, targetSluiceTLS)) &&
		!slices.ContainsFunc(o.modes, func(m string) bool { return slices.Contains(tlsModes, m) }) {
		errs = append(errs, fmt.Errorf("-modes: the TLS targets run in -M %s only: give it", strings.Join(tlsModes, ", ")))
	}
	if slices.Contains(o.targets, targetBaseline) && o.baselineBin == "" {
		errs = append(errs, errors.New("-targets: baseline needs -baseline-bin"))
	}
	switch {
	case len(o.clients) == 0:
		errs = append(errs, errors.New("-clients: give at least one client count"))
	case len(o.modes) == 0:
		errs = append(errs, errors.New("-modes: give at least one mode"))
	case len(o.targets) == 0:
		errs = append(errs, errors.New("-targets: give at least one target"))
	}
	// The proxies run in their own directories: a relative path must not
	// be resolved there.
	for _, bin := range []*string{&o.sluiceBin, &o.baselineBin} {
		if *bin == "" {
			continue
		}
		abs, err := filepath.Abs(*bin)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolving %s: %w", *bin, err))
			continue
		}
		*bin = abs
	}
	if o.duration < time.Second {
		errs = append(errs, fmt.Errorf("-duration: must be at least 1s, got %v", o.duration))
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("-warmup: must not be negative, got %v", o.warmup))
	}
	if o.idle < 0 {
		errs = append(errs, fmt.Errorf("-idle: must not be negative, got %d", o.idle))
	}
	if o.scale < 1 || o.poolSize < 1 || o.threads < 1 {
		errs = append(errs, errors.New("-scale, -pool and -threads must be at least 1"))
	}
	return o, errors.Join(errs...)
}

// flagGiven reports whether the flag called name was set on the command
// line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
