package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk/filterbuild"
)

const filterUsage = `usage: sluice filter build [-o OUT] DIR
       sluice filter test --module F --sql FILE [--config JSON] [--user U] [--database D]
                          [--application-name A] [--listener L] [--extended]
                          [--timeout 2ms] [--failure-policy fail_safe|fail_closed]`

// runFilter runs `sluice filter build|test`. Its exit codes: 0 success,
// 1 a failed build or a failed filter call, 2 a usage error.
func runFilter(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, filterUsage)
		return 2
	}
	switch args[0] {
	case "build":
		return filterBuild(args[1:], stdout, stderr)
	case "test":
		return filterTest(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "sluice filter: unknown command %q (want build or test)\n%s\n", args[0], filterUsage)
	return 2
}

// filterBuild compiles the Go filter in a directory to WebAssembly and
// prints the module's path. The compiler's messages are shown as they are.
func filterBuild(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice filter build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, filterUsage) }
	out := fs.String("o", "", "the .wasm file to write (default: DIR/<name of DIR>.wasm)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "sluice filter build: want one directory, got %d arguments\n%s\n", len(pos), filterUsage)
		return 2
	}
	dir := pos[0]
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		fmt.Fprintf(stderr, "sluice filter build: %s is not a directory\n", dir)
		return 2
	}
	if *out == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			fmt.Fprintf(stderr, "sluice filter build: %v\n", err)
			return 2
		}
		*out = filepath.Join(dir, filepath.Base(abs)+".wasm")
	}
	if err := filterbuild.Build(dir, *out); err != nil {
		var be *filterbuild.Error
		if errors.As(err, &be) {
			stderr.Write(be.Output)
			fmt.Fprintf(stderr, "sluice filter build: go build of %s failed: %v\n", dir, be.Err)
		} else {
			fmt.Fprintf(stderr, "sluice filter build: %v\n", err)
		}
		return 1
	}
	fmt.Fprintln(stdout, *out)
	return 0
}

// filterTest loads a filter module with the real host, runs the statements
// of a SQL file through one session of it as a proxy session would, and
// prints the decision for each.
func filterTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice filter test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, filterUsage) }
	module := fs.String("module", "", "the filter's .wasm file")
	sqlPath := fs.String("sql", "", "the SQL file: statements separated by semicolons")
	config := fs.String("config", "", "the filter's configuration (JSON)")
	var attrs filters.SessionAttrs
	fs.StringVar(&attrs.User, "user", "", "the session's user")
	fs.StringVar(&attrs.Database, "database", "", "the session's database")
	fs.StringVar(&attrs.ApplicationName, "application-name", "", "the session's application_name")
	fs.StringVar(&attrs.Listener, "listener", "", "the name of the listener the session came in on")
	extended := fs.Bool("extended", false, "send each statement as a Parse (extended protocol), not a Query")
	timeout := fs.Duration("timeout", filters.DefaultTimeout, "the deadline of every call into the filter")
	policy := fs.String("failure-policy", filters.FailSafe, "what answers for a failed call: fail_safe or fail_closed")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	switch {
	case len(pos) > 0:
		fmt.Fprintf(stderr, "sluice filter test: unexpected argument %q\n%s\n", pos[0], filterUsage)
		return 2
	case *module == "":
		fmt.Fprintf(stderr, "sluice filter test: --module is required\n%s\n", filterUsage)
		return 2
	case *sqlPath == "":
		fmt.Fprintf(stderr, "sluice filter test: --sql is required\n%s\n", filterUsage)
		return 2
	case *config != "" && !json.Valid([]byte(*config)):
		fmt.Fprintf(stderr, "sluice filter test: --config is not valid JSON: %s\n", *config)
		return 2
	}
	text, err := os.ReadFile(*sqlPath)
	if err != nil {
		fmt.Fprintf(stderr, "sluice filter test: %v\n", err)
		return 2
	}
	// One writer for the filter's logs, which the host may write from a
	// goroutine replacing an instance, and for this command's messages.
	errw := zapcore.Lock(zapcore.AddSync(stderr))
	name := strings.TrimSuffix(filepath.Base(*module), filepath.Ext(*module))
	f, err := filters.Load(context.Background(), filters.Config{
		Name: name, Module: *module, FailurePolicy: *policy, Timeout: *timeout,
		Config: []byte(*config), CacheDir: compileCacheDir(),
	}, consoleLogger(errw))
	if err != nil {
		fmt.Fprintf(errw, "sluice filter test: %v\n", err)
		return 2
	}
	defer f.Close()
	r := tester{f: f, out: stdout, errw: errw, extended: *extended}
	r.run(attrs, string(text))
	return r.exitCode()
}

// tester runs the statements of a SQL file through one session of a
// filter and keeps count.
type tester struct {
	f        *filters.Filter
	out      io.Writer
	errw     io.Writer
	extended bool

	statements, rejected, rewritten int
	failedCalls                     int64 // the filter's Stats().Failures at the end
}

// run starts a session with attrs, decides each statement of text in it,
// prints a line per statement and the summary, and ends the session.
// Failed calls are reported on errw, naming the statement.
func (r *tester) run(attrs filters.SessionAttrs, text string) {
	failures := r.f.Stats().Failures
	p, err := filters.Chain{r.f}.ForSession(attrs)
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			fmt.Fprintf(r.out, "session  action=reject %s %q\n", we.Code, we.Message)
		} else {
			fmt.Fprintf(r.out, "session  refused: %v\n", err)
		}
		return
	}
	if c := p.SessionRoute().Cluster; c != "" {
		fmt.Fprintf(r.out, "session  route=cluster:%s\n", c)
	}
	if now := r.f.Stats().Failures; now > failures {
		fmt.Fprintf(r.errw, "sluice filter test: filter %q failed at session start; its failure policy answers the first statement\n", r.f.Name())
		failures = now
	}
	inTx := false
	line, lineAt := 1, 0 // the line number of offset lineAt
	for _, sp := range sqlclass.Split(nil, text) {
		start, sql := statementText(text, sp)
		line += strings.Count(text[lineAt:start], "\n")
		lineAt = start
		st := filters.NewStatement(sql, inTx, r.extended)
		d := p.DecideStatement(&st)
		r.statements++
		conflict := ""
		if d.Conflict != "" {
			conflict = "  conflict(route ignored inside the transaction)"
		}
		fmt.Fprintf(r.out, "%d  route=%s  pin=%s  action=%s%s  %s\n", line, route(d.Route), pin(d), action(d), conflict, shorten(sql))
		// A fail_closed reject is the host's: it wraps the call's error.
		hostReject := d.Reject != nil && d.Reject.Code == filters.CodeFilterFailed && d.Reject.Err != nil
		if now := r.f.Stats().Failures; now > failures || hostReject {
			failures = now
			answer := "fail_safe sent it to the writer"
			if hostReject {
				cause, _, _ := strings.Cut(d.Reject.Err.Error(), "\n") // the log above has the rest
				answer = "fail_closed rejected it: " + cause
			}
			fmt.Fprintf(r.errw, "sluice filter test: line %d: filter %q failed on %q; %s\n", line, r.f.Name(), shorten(sql), answer)
		}
		switch {
		case d.Reject != nil:
			r.rejected++
			continue // the server never sees it
		case d.Rewrite != "":
			r.rewritten++
			sql = d.Rewrite
		}
		inTx = filters.InTransactionAfter(sql, inTx)
	}
	p.Close()
	if now := r.f.Stats().Failures; now > failures {
		fmt.Fprintf(r.errw, "sluice filter test: filter %q failed at session end\n", r.f.Name())
	}
	r.failedCalls = r.f.Stats().Failures
	fmt.Fprintf(r.out, "statements=%d  rejected=%d  rewritten=%d  failures=%d%s\n",
		r.statements, r.rejected, r.rewritten, r.failedCalls, counters(r.f.Counters()))
}

// exitCode is 1 when a call into the filter failed, else 0.
func (r *tester) exitCode() int {
	if r.failedCalls > 0 {
		return 1
	}
	return 0
}

// statementText returns the text of the statement at sp as psql would send
// it, and its offset in text: without the white space and the -- comment
// lines before it and the white space after it. /* */ comments stay:
// filters may read hints in them.
func statementText(text string, sp sqlclass.Span) (int, string) {
	start, s := sp.Start, text[sp.Start:sp.End]
	for {
		trimmed := strings.TrimLeft(s, " \t\r\n\f\v")
		if strings.HasPrefix(trimmed, "--") {
			if i := strings.IndexByte(trimmed, '\n'); i >= 0 {
				trimmed = trimmed[i+1:]
			} else {
				trimmed = ""
			}
		}
		start += len(s) - len(trimmed)
		if len(trimmed) == len(s) {
			break
		}
		s = trimmed
	}
	return start, strings.TrimRight(s, " \t\r\n\f\v")
}

func route(r session.Route) string {
	if r.Cluster != "" {
		return "cluster:" + r.Cluster
	}
	return r.Role.String()
}

func pin(d filters.Decision) string {
	switch d.Pin {
	case session.PinForce:
		return fmt.Sprintf("force(%q)", d.PinReason)
	case session.PinNever:
		return "never"
	}
	return "keep"
}

func action(d filters.Decision) string {
	switch {
	case d.Reject != nil:
		return fmt.Sprintf("reject %s %q", d.Reject.Code, d.Reject.Message)
	case d.Rewrite != "":
		return fmt.Sprintf("rewrite %q", shorten(d.Rewrite))
	}
	return "none"
}

// counters formats a filter's counters, sorted by name.
func counters(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		if i == 0 {
			b.WriteString("  counters:")
		}
		fmt.Fprintf(&b, " %s=%d", n, m[n])
	}
	return b.String()
}

// shortLen is how many characters of a statement a line shows.
const shortLen = 80

// shorten puts sql on one line, white space collapsed, and cuts it to
// shortLen characters.
func shorten(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if utf8.RuneCountInString(s) <= shortLen {
		return s
	}
	n := 0
	for i := range s {
		if n == shortLen-3 {
			return s[:i] + "..."
		}
		n++
	}
	return s
}

// parseInterspersed parses fs's flags wherever they are among args and
// returns the other arguments; those after "--" are never flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// consoleLogger logs everything a filter says, and what the host says
// about it, to w in zap's console format, without times.
func consoleLogger(w zapcore.WriteSyncer) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.TimeKey, enc.CallerKey, enc.StacktraceKey = "", "", ""
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), w, zapcore.DebugLevel))
}

// compileCacheDir is where compiled modules are kept between runs, as the
// proxy keeps them, or "" (no cache) without a user cache directory.
func compileCacheDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "sluice", "filters")
}
