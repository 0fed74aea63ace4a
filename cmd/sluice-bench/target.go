package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The targets pgbench is run against, in the order they are run and shown.
const (
	targetDirect    = "direct"
	targetPgBouncer = "pgbouncer"
	// targetSluice is the sluice executable with the loop engine
	// (engine = "loop").
	targetSluice = "sluice"
	// targetSluiceGoroutine is the same executable and configuration with
	// the goroutine engine (engine = "goroutine"), run and shown next to
	// targetSluice.
	targetSluiceGoroutine = "sluice-goroutine"
	// targetBaseline is a second Sluice executable (-baseline-bin), set up
	// exactly like targetSluice, to compare two builds in one run.
	targetBaseline = "baseline"
	// targetReader is the sluice executable with a reader listener in
	// front of readerReplicas streaming replicas of the server, reported
	// in a section of its own next to targetSluice.
	targetReader = "reader"
	// targetFilter is the sluice executable configured like targetSluice
	// plus the readwrite example filter on the statement hook (-filter),
	// reported in a section of its own next to targetSluice.
	targetFilter = "sluice+readwrite"
	// targetPgBouncerTLS and targetSluiceTLS are targetPgBouncer and
	// targetSluice (-tls) configured alike plus a listener that requires
	// TLS, with an ECDSA P-256 certificate from a throwaway CA; their clients
	// connect with sslmode=require and the proxies' connections to
	// PostgreSQL stay plaintext. They are run in tlsModes only.
	targetPgBouncerTLS = "pgbouncer-tls"
	targetSluiceTLS    = "sluice-tls"
)

// tlsTwins maps each plaintext proxy target to its TLS twin, which -tls
// adds.
var tlsTwins = map[string]string{targetPgBouncer: targetPgBouncerTLS, targetSluice: targetSluiceTLS}

// tlsModes are the pgbench -M modes the TLS targets are run in: enough to
// compare a TLS pairing with a plaintext one without doubling the run.
var tlsModes = []string{"simple"}

// readyTimeout bounds how long a freshly started proxy has to accept a
// query.
const readyTimeout = 30 * time.Second

// target is one place pgbench connects to: PostgreSQL itself or a proxy in
// front of it. It is used by one goroutine at a time.
type target struct {
	name string
	port int
	// adminPort is the port of a Sluice's admin listener with Go's
	// profiles (the idle stage reads its heap there); 0 when it has none.
	adminPort int
	// sslmode is libpq's sslmode its clients connect with: sslRequire
	// for a TLS target, "" (sslDisable) otherwise.
	sslmode string
	// tlsNegotiated is the protocol and cipher suite an OpenSSL client
	// negotiated with a TLS target once it was started; "" if unknown.
	tlsNegotiated string
	// start starts the proxy process; nil for the server itself.
	start func(context.Context) (*child, error)
	// verify, if set, checks once the proxy answers that it sends
	// queries where it should.
	verify func(context.Context) error
	proc   *child
	// broken says why the target cannot be benchmarked (it could not be
	// built or started); nil when it can.
	broken error
	// maxClients is the largest client count the target takes; 0 means no
	// limit.
	maxClients int
	// unsupported maps a pgbench -M mode to why the target cannot run it.
	unsupported map[string]string
	// modes, when set, are the only pgbench -M modes the target is run
	// in; the others show "-".
	modes []string
	// idleRSSKiB is the proxy's resident memory once started, before any
	// benchmark.
	idleRSSKiB int64
	// logMark is the size of the proxy's log before the current run.
	logMark int64
}

// launch starts the proxy and waits until a query goes through it; on
// failure the process is stopped and the error quotes its log.
func (t *target) launch(ctx context.Context) error {
	proc, err := t.start(ctx)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, t.port, t.sslmode, proc); err != nil {
		proc.stop()
		if tail := proc.logTail(20); tail != "" {
			err = fmt.Errorf("%w\n  last lines of its log (%s):\n%s", err, proc.logPath, indent(tail, "    "))
		}
		return err
	}
	if t.verify != nil {
		if err := t.verify(ctx); err != nil {
			proc.stop()
			return err
		}
	}
	t.proc = proc
	if rss, _, err := proc.memory(); err == nil {
		t.idleRSSKiB = rss
	}
	return nil
}

// check makes sure the proxy is running and answers a query before a run.
// A proxy that has exited or stopped answering is restarted; the returned
// note says what happened, for the report. A non-nil error means the
// target cannot be used for this run.
func (t *target) check(ctx context.Context) (note string, err error) {
	if t.broken != nil {
		return "", t.broken
	}
	if t.start == nil {
		return "", nil
	}
	if done, exitErr := t.proc.exited(); done {
		note = fmt.Sprintf("%s had exited (%v); restarting it. Last lines of its log:\n%s",
			t.name, exitErr, indent(t.proc.logTail(20), "    "))
	} else if _, err := t.query(ctx, "SELECT 1"); err != nil {
		note = fmt.Sprintf("%s stopped answering (%v); restarting it", t.name, err)
	} else {
		return "", nil
	}
	t.proc.stop()
	if err := t.launch(ctx); err != nil {
		t.broken = fmt.Errorf("%s could not be restarted: %w", t.name, err)
		return note + "\n" + t.broken.Error(), t.broken
	}
	return note, nil
}

// query runs sql through psql against the target, with TLS if the target
// requires it, and returns the single value it prints.
func (t *target) query(ctx context.Context, sql string) (string, error) {
	return querySingleSSL(ctx, t.port, t.sslmode, sql)
}

// stop stops the proxy, if one is running.
func (t *target) stop() {
	if t.proc != nil {
		t.proc.stop()
	}
}

// waitReady polls until `SELECT 1` through port (with libpq's sslmode)
// succeeds, the process exits or readyTimeout passes.
func waitReady(ctx context.Context, port int, sslmode string, proc *child) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if done, exitErr := proc.exited(); done {
			return fmt.Errorf("%s exited during startup: %v", proc.name, exitErr)
		}
		_, err := querySingleSSL(ctx, port, sslmode, "SELECT 1")
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer SELECT 1 on port %d within %v: %w", proc.name, port, readyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
