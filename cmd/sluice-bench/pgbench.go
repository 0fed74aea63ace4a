package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Credentials of the role the benchmark connects as, on every target.
const (
	benchUser     = "bench"
	benchPassword = "benchpw"
	benchDatabase = "bench"
	loopback      = "127.0.0.1"
)

// runTimeoutSlack is added to a pgbench run's duration to bound it: a run
// still going after that is killed and reported as failed, so a proxy that
// stalls cannot hang the harness.
const runTimeoutSlack = 60 * time.Second

// pgbenchRun describes one `pgbench -S` run against one target.
type pgbenchRun struct {
	port     int
	clients  int
	threads  int
	mode     string // pgbench -M: simple, extended or prepared
	duration time.Duration
	// sslmode is libpq's sslmode for the clients: sslRequire for a TLS
	// target; "" means sslDisable.
	sslmode string
}

// args returns pgbench's command-line arguments.
func (r pgbenchRun) args() []string {
	return []string{
		"-S", "-n",
		"-T", strconv.Itoa(wholeSeconds(r.duration)),
		"-c", strconv.Itoa(r.clients),
		"-j", strconv.Itoa(max(1, min(r.threads, r.clients))),
		"-M", r.mode,
		"-h", loopback, "-p", strconv.Itoa(r.port),
		"-U", benchUser, benchDatabase,
	}
}

// wholeSeconds rounds d up to whole seconds, at least one, as pgbench -T
// takes.
func wholeSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// pgbenchResult is what one pgbench run reported.
type pgbenchResult struct {
	tps       float64 // excluding initial connection time
	latencyMS float64 // average
	processed int64   // transactions actually processed
	failed    int64   // failed transactions (PostgreSQL 15+)
}

var (
	tpsPattern       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	latencyPattern   = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	processedPattern = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	failedPattern    = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// errNoTPS is returned when pgbench's output holds no tps line.
var errNoTPS = errors.New("no \"tps = ... (without initial connection time)\" line in pgbench output")

// parsePgbench reads the summary pgbench prints to stdout. The tps line is
// required; the others are filled in when present.
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	m := tpsPattern.FindStringSubmatch(out)
	if m == nil {
		return r, errNoTPS
	}
	var err error
	if r.tps, err = strconv.ParseFloat(m[1], 64); err != nil {
		return r, fmt.Errorf("tps %q: %w", m[1], err)
	}
	if m := latencyPattern.FindStringSubmatch(out); m != nil {
		r.latencyMS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := processedPattern.FindStringSubmatch(out); m != nil {
		r.processed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := failedPattern.FindStringSubmatch(out); m != nil {
		r.failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

// runPgbench runs pgbench to completion, bounded by the run's duration plus
// runTimeoutSlack, and parses its summary. A non-zero exit, a timeout or a
// missing summary is an error that quotes pgbench's distinct error lines;
// the partial result, if any, is returned with it.
//
// If verbose is not nil, pgbench's command line and output are copied to
// it.
func runPgbench(ctx context.Context, r pgbenchRun, verbose io.Writer) (pgbenchResult, error) {
	timeout := time.Duration(wholeSeconds(r.duration))*time.Second + runTimeoutSlack
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", r.args()...)
	cmd.Env = clientEnv(r.sslmode)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	detach(cmd)
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if verbose != nil {
		fmt.Fprintf(verbose, "$ PGSSLMODE=%s pgbench %s\n%s%s", sslmodeOrDisable(r.sslmode), strings.Join(r.args(), " "), stdout.String(), stderr.String())
	}
	res, parseErr := parsePgbench(stdout.String())
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return res, fmt.Errorf("timed out after %v and was killed%s", timeout, quoteLines(stderr.String()))
	case runErr != nil:
		return res, fmt.Errorf("pgbench: %w%s", runErr, quoteLines(stderr.String()))
	case parseErr != nil:
		return res, fmt.Errorf("%w%s", parseErr, quoteLines(stdout.String()+stderr.String()))
	case res.processed == 0 && res.tps == 0:
		return res, fmt.Errorf("pgbench exited successfully but processed no transaction%s",
			quoteLines(summaryLines(stdout.String())+stderr.String()))
	}
	return res, nil
}

// clientEnv returns the environment of the PostgreSQL client programs the
// harness runs: the harness's own without PG* variables, which could
// redirect them, plus the bench password and PGSSLMODE=sslmode ("" means
// sslDisable, so that a plaintext target is measured over plain TCP).
func clientEnv(sslmode string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "PGPASSWORD="+benchPassword, "PGSSLMODE="+sslmodeOrDisable(sslmode))
}

// sslmodeOrDisable returns sslmode, or sslDisable for "".
func sslmodeOrDisable(sslmode string) string {
	if sslmode == "" {
		return sslDisable
	}
	return sslmode
}

// summaryLines returns the lines of pgbench's summary worth quoting when
// it is implausible.
func summaryLines(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "number of ") || strings.HasPrefix(line, "latency ") ||
			strings.HasPrefix(line, "initial connection") || strings.HasPrefix(line, "tps ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

// clientNumber matches the client number in pgbench's per-client errors.
var clientNumber = regexp.MustCompile(`client [0-9]+`)

// maxQuotedLines bounds how many distinct error lines an error quotes.
const maxQuotedLines = 8

// quoteLines returns the distinct non-empty lines of out, with pgbench's
// client numbers folded together (1,000 clients failing alike give one
// line), as an indented block to append to an error message; "" if out has
// none.
func quoteLines(out string) string {
	var lines []string
	counts := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(clientNumber.ReplaceAllString(line, "client N"))
		if line == "" {
			continue
		}
		if counts[line] == 0 {
			lines = append(lines, line)
		}
		counts[line]++
	}
	if len(lines) == 0 {
		return ""
	}
	omitted := 0
	if len(lines) > maxQuotedLines {
		omitted = len(lines) - maxQuotedLines
		lines = slices.Concat(lines[:maxQuotedLines/2], lines[len(lines)-maxQuotedLines/2:])
	}
	var b strings.Builder
	b.WriteString(":")
	for i, line := range lines {
		if omitted > 0 && i == maxQuotedLines/2 {
			fmt.Fprintf(&b, "\n    (%d more distinct lines)", omitted)
		}
		fmt.Fprintf(&b, "\n    %s", line)
		if n := counts[line]; n > 1 {
			fmt.Fprintf(&b, " (x%d)", n)
		}
	}
	return b.String()
}

// runClient runs a PostgreSQL client program (psql, pgbench -i) without
// TLS to completion within timeout and returns its standard output; on
// failure the error quotes its output.
func runClient(ctx context.Context, timeout time.Duration, program string, args ...string) (string, error) {
	return runClientSSL(ctx, timeout, sslDisable, program, args...)
}

// runClientSSL is runClient with libpq's sslmode.
func runClientSSL(ctx context.Context, timeout time.Duration, sslmode, program string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Env = clientEnv(sslmode)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	detach(cmd)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return stdout.String(), fmt.Errorf("%s: %w%s", program, err, quoteLines(stderr.String()))
	}
	return stdout.String(), nil
}

// querySingle runs sql through psql without TLS as the bench user against
// port and returns the single value it prints.
func querySingle(ctx context.Context, port int, sql string) (string, error) {
	return querySingleSSL(ctx, port, sslDisable, sql)
}

// querySingleSSL is querySingle with libpq's sslmode.
func querySingleSSL(ctx context.Context, port int, sslmode, sql string) (string, error) {
	out, err := runClientSSL(ctx, 15*time.Second, sslmode, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", loopback, "-p", strconv.Itoa(port), "-U", benchUser, "-d", benchDatabase, "-c", sql)
	return strings.TrimSpace(out), err
}
