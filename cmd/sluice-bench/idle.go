package main

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The idle stage (-idle N): N authenticated clients per proxy, opened
// idleConcurrency at a time, each served one SELECT 1, then left idle for
// idleSettle before the proxy's memory is read.
const (
	idleConcurrency = 200
	idleSettle      = 2 * time.Second
	// idleConnectTimeout bounds one client's connection, login and
	// SELECT 1.
	idleConnectTimeout = 30 * time.Second
	// idleCloseTimeout bounds how long the proxy has, once the clients
	// have gone, to close their sockets.
	idleCloseTimeout = 30 * time.Second
	// idleClientMargin is the room left above the idle clients in
	// PgBouncer's max_client_conn and in the open-file limit.
	idleClientMargin = 200
	// idleFDSlack is how many more open files than before the clients
	// came a proxy may keep once they have gone (server connections
	// opened meanwhile).
	idleFDSlack = 50
)

// idleResult is the idle stage's measurement of one proxy.
type idleResult struct {
	target    string
	clients   int // asked for
	connected int // logged in and served SELECT 1
	failed    int
	firstErr  error // the first failure, in time
	// err says why the proxy could not be measured at all; nil if it
	// was.
	err         error
	connectTime time.Duration // from the first dial to the last SELECT 1
	// rssBefore and rssIdle are VmRSS in KiB before the first client
	// and after all are connected and idle; peakIdle is VmHWM then.
	rssBefore, rssIdle, peakIdle int64
	// heapBefore and heapIdle are a Sluice's Go heap in bytes (HeapAlloc
	// right after a collection, from its admin listener's profiles) at
	// the same moments; zero when not read (PgBouncer).
	heapBefore, heapIdle int64
	// fdsBefore, fdsIdle and fdsClosed are the proxy's open files before,
	// with the clients idle, and once they have gone.
	fdsBefore, fdsIdle, fdsClosed int
	// afterClose says what went wrong once the clients had gone; "" if
	// the proxy closed their sockets and answered a query.
	afterClose string
	// tls is the TLS version and cipher suite the clients negotiated
	// with a TLS target; "" for plaintext clients.
	tls string
}

// idleTargets are the proxies the idle stage measures, in the order they
// are run and shown: those of the syscall stage and the TLS targets.
var idleTargets = append(slices.Clone(syscallTargets), targetPgBouncerTLS, targetSluiceTLS)

// perClientKiB returns the resident memory added per idle client; false
// if none connected.
func (r idleResult) perClientKiB() (float64, bool) {
	if r.err != nil || r.connected == 0 {
		return 0, false
	}
	return float64(r.rssIdle-r.rssBefore) / float64(r.connected), true
}

// perClientHeapKiB returns the Go heap added per idle client; false if
// it was not read.
func (r idleResult) perClientHeapKiB() (float64, bool) {
	if r.err != nil || r.connected == 0 || r.heapBefore == 0 || r.heapIdle == 0 {
		return 0, false
	}
	return float64(r.heapIdle-r.heapBefore) / 1024 / float64(r.connected), true
}

// goHeap returns HeapAlloc right after a collection, from the heap
// profile of the admin listener at port (admin.pprof).
func goHeap(ctx context.Context, port int) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/heap?debug=1&gc=1", net.JoinHostPort(loopback, strconv.Itoa(port))), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("heap profile: %s", resp.Status)
	}
	return parseHeapAlloc(string(body))
}

// parseHeapAlloc finds "# HeapAlloc = N" in a debug=1 heap profile.
func parseHeapAlloc(profile string) (int64, error) {
	for line := range strings.Lines(profile) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no HeapAlloc in the heap profile")
}

// runIdle measures every proxy of idleTargets with b.opts.idle idle
// clients, one after the other.
func (b *bench) runIdle(ctx context.Context) {
	for _, t := range b.targets {
		if !slices.Contains(idleTargets, t.name) {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		b.logf("%-16s opening %d idle clients", t.name, b.opts.idle)
		r := b.idleOne(ctx, t, b.opts.idle)
		if ctx.Err() != nil {
			return
		}
		b.idle = append(b.idle, r)
		switch perClient, ok := r.perClientKiB(); {
		case r.err != nil:
			b.logf("%-16s idle clients: failed: %v", t.name, r.err)
			b.notef("idle clients on %s: %v", t.name, r.err)
		case ok:
			b.logf("%-16s idle clients: %d of %d connected in %.1f s, %.2f KiB per client", t.name, r.connected, r.clients,
				r.connectTime.Seconds(), perClient)
		}
		if r.failed > 0 {
			b.notef("idle clients on %s: %d of %d could not connect, log in or run SELECT 1; the first error: %v", t.name, r.failed, r.clients, r.firstErr)
		}
		if r.afterClose != "" {
			b.notef("idle clients on %s, after closing them: %s", t.name, r.afterClose)
		}
	}
}

// idleOne opens n idle clients to t, reads its memory, closes them and
// checks the proxy still answers.
func (b *bench) idleOne(ctx context.Context, t *target, n int) idleResult {
	r := idleResult{target: t.name, clients: n}
	if t.start != nil && t.proc != nil && t.broken == nil {
		// A fresh process: what earlier runs left in its heap (and the
		// runtime hands back meanwhile) would move its RSS either way.
		t.proc.stop()
		t.proc = nil
		if err := t.launch(ctx); err != nil {
			t.broken = fmt.Errorf("%s could not be restarted: %w", t.name, err)
			r.err = fmt.Errorf("restarting it before the idle clients: %w", err)
			return r
		}
	}
	note, err := t.check(ctx)
	if note != "" {
		b.notef("before the idle clients on %s: %s", t.name, note)
	}
	if err != nil {
		r.err = err
		return r
	}
	proc := t.proc
	if r.rssBefore, _, err = proc.memory(); err != nil {
		r.err = fmt.Errorf("reading its memory: %w", err)
		return r
	}
	r.fdsBefore, _ = openFiles(proc.pid())
	if t.adminPort != 0 {
		if r.heapBefore, err = goHeap(ctx, t.adminPort); err != nil {
			b.notef("idle clients on %s: reading its heap: %v", t.name, err)
		}
	}
	t.logMark = proc.logSize()

	addr := net.JoinHostPort(loopback, strconv.Itoa(t.port))
	var tlsConfig *tls.Config
	if t.sslmode == sslRequire {
		tlsConfig = idleTLSConfig()
	}
	start := time.Now()
	conns, failed, firstErr := openIdleClients(ctx, addr, n, idleConcurrency, tlsConfig)
	r.connectTime = time.Since(start)
	r.connected, r.failed, r.firstErr = len(conns), failed, firstErr
	if len(conns) > 0 {
		if tc, ok := conns[0].(*tls.Conn); ok {
			r.tls = describeTLS(tc.ConnectionState())
		}
	}
	defer func() {
		for _, c := range conns {
			closeIdleClient(c)
		}
	}()
	if ctx.Err() != nil {
		r.err = ctx.Err()
		return r
	}
	select {
	case <-ctx.Done():
		r.err = ctx.Err()
		return r
	case <-time.After(idleSettle):
	}
	if r.rssIdle, r.peakIdle, err = proc.memory(); err != nil {
		if done, exitErr := proc.exited(); done {
			err = fmt.Errorf("it exited (%v); last lines of its log:\n%s", exitErr, indent(proc.logTail(20), "    "))
		}
		r.err = fmt.Errorf("reading its memory with the clients idle: %w", err)
		return r
	}
	r.fdsIdle, _ = openFiles(proc.pid())
	if t.adminPort != 0 && r.heapBefore != 0 {
		if r.heapIdle, err = goHeap(ctx, t.adminPort); err != nil {
			b.notef("idle clients on %s: reading its heap: %v", t.name, err)
		}
	}

	for _, c := range conns {
		closeIdleClient(c)
	}
	conns = nil
	var problems []string
	deadline := time.Now().Add(idleCloseTimeout)
	for {
		r.fdsClosed, err = openFiles(proc.pid())
		if err != nil || r.fdsClosed <= r.fdsBefore+idleFDSlack {
			break
		}
		if time.Now().After(deadline) {
			problems = append(problems, fmt.Sprintf("it still had %d open files %v after the clients closed (%d before they came)",
				r.fdsClosed, idleCloseTimeout, r.fdsBefore))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := t.query(ctx, "SELECT 1"); err != nil {
		problems = append(problems, fmt.Sprintf("SELECT 1 through it failed: %v", err))
	}
	if logged := proc.logSince(t.logMark); logged != "" && (len(problems) > 0 || r.failed > 0) {
		problems = append(problems, "it logged meanwhile:\n"+indent(logged, "    "))
	}
	r.afterClose = strings.Join(problems, "; ")
	return r
}

// openIdleClients opens n clients to addr, at most concurrency at a time,
// each logged in and served SELECT 1, over TLS with tlsConfig unless it
// is nil. It returns the connections that made it, how many did not and
// the first error.
func openIdleClients(ctx context.Context, addr string, n, concurrency int, tlsConfig *tls.Config) ([]net.Conn, int, error) {
	var (
		mu       sync.Mutex
		conns    = make([]net.Conn, 0, n)
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan struct{})
	for range min(concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, err := openIdleClient(ctx, addr, tlsConfig)
				mu.Lock()
				if err != nil {
					if failed++; firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return conns, failed, firstErr
}

// openIdleClient connects to addr, makes the TLS handshake with
// tlsConfig after an SSLRequest unless tlsConfig is nil, logs in as the
// bench user with md5 and runs SELECT 1, within idleConnectTimeout. The
// connection returned is a *tls.Conn with TLS.
func openIdleClient(ctx context.Context, addr string, tlsConfig *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: idleConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(idleConnectTimeout)
	if tlsConfig != nil {
		if err := conn.SetDeadline(deadline); err != nil {
			conn.Close()
			return nil, err
		}
		tc, err := startTLS(conn, tlsConfig)
		if err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	if err := loginAndSelect(conn, deadline); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// loginAndSelect runs the startup, md5 authentication and one SELECT 1 on
// conn, by deadline.
func loginAndSelect(conn net.Conn, deadline time.Time) error {
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": benchUser, "database": benchDatabase}})
	if err := fe.Flush(); err != nil {
		return fmt.Errorf("sending the startup message: %w", err)
	}
	if err := untilReady(fe, "logging in"); err != nil {
		return err
	}
	fe.Send(&pgproto3.Query{String: "SELECT 1"})
	if err := fe.Flush(); err != nil {
		return fmt.Errorf("sending SELECT 1: %w", err)
	}
	if err := untilReady(fe, "SELECT 1"); err != nil {
		return err
	}
	return conn.SetDeadline(time.Time{})
}

// untilReady reads backend messages up to ReadyForQuery, answering an md5
// password request; an error response or any other authentication
// request is an error. For a query, it checks the one row is "1".
func untilReady(fe *pgproto3.Frontend, what string) error {
	rows := 0
	for {
		msg, err := fe.Receive()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationMD5Password:
			fe.Send(&pgproto3.PasswordMessage{Password: md5Password(benchUser, benchPassword, m.Salt)})
			if err := fe.Flush(); err != nil {
				return fmt.Errorf("%s: sending the password: %w", what, err)
			}
		case *pgproto3.AuthenticationOk, *pgproto3.ParameterStatus, *pgproto3.BackendKeyData,
			*pgproto3.RowDescription, *pgproto3.CommandComplete, *pgproto3.NoticeResponse:
		case *pgproto3.DataRow:
			if rows++; len(m.Values) != 1 || string(m.Values[0]) != "1" {
				return fmt.Errorf("%s: unexpected row %q", what, m.Values)
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("%s: %s %s: %s", what, m.Severity, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			if what == "SELECT 1" && rows != 1 {
				return fmt.Errorf("%s: %d rows, want 1", what, rows)
			}
			return nil
		default:
			return fmt.Errorf("%s: unexpected %T", what, msg)
		}
	}
}

// md5Password returns the md5 password message for user: "md5" followed
// by md5(md5(password + user) + salt) in hex.
func md5Password(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}

// terminateMessage is the protocol's Terminate message.
var terminateMessage = []byte{'X', 0, 0, 0, 4}

// closeIdleClient says goodbye and closes c.
func closeIdleClient(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(terminateMessage)
	_ = c.Close()
}

// openFiles returns how many files process pid has open.
func openFiles(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}

// Reporting.

// writeIdle writes the idle stage's section.
func (b *bench) writeIdle(w *strings.Builder) {
	if b.opts.idle <= 0 {
		return
	}
	tlsClients := ""
	if slices.ContainsFunc(b.idle, func(r idleResult) bool { return r.target == targetPgBouncerTLS || r.target == targetSluiceTLS }) {
		tlsClients = ", except that to pgbouncer-tls and sluice-tls each client first sends an SSLRequest and makes a TLS handshake " +
			"(Go's crypto/tls client, certificate not verified, as sslmode=require), then logs in over TLS"
	}
	fmt.Fprintf(w, "Idle clients (-idle %d): after the runs above, for each proxy in turn the harness restarts it and opens %d client connections over TCP on loopback "+
		"(md5 login as the bench user, %d at a time; no TLS%s); each runs `SELECT 1` once and then stays idle. The proxy's VmRSS "+
		"(/proc/<pid>/status) is read before the first connection and again once all are connected and have been idle for %v; "+
		"\"KiB per idle client\" is the difference over the clients connected. For Sluice, \"heap KiB per idle client\" is the same "+
		"difference of its Go heap (HeapAlloc right after a forced collection, read from its admin listener's /debug/pprof/heap, admin.pprof "+
		"on), which leaves out what the runtime holds but does not use. Open files are the proxy's (/proc/<pid>/fd) before, with the "+
		"clients idle, and once they had gone. The clients are then closed, and the proxy must close their sockets and answer `SELECT 1`. "+
		"PgBouncer's max_client_conn is %d for this; Sluice's configuration has no client limit.\n\n",
		b.opts.idle, b.opts.idle, idleConcurrency, tlsClients, idleSettle, max(defaultMaxClientConn, b.opts.idle+idleClientMargin))
	if len(b.idle) == 0 {
		w.WriteString("No measurement was made.\n\n")
		return
	}
	writeRow(w, []string{"target", "connected", "failed", "connect s", "RSS before MiB", "RSS idle MiB", "peak RSS MiB", "KiB per idle client",
		"heap KiB per idle client", "open files before / idle / after"})
	writeRow(w, []string{"---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"})
	for _, r := range b.idle {
		if r.err != nil {
			writeRow(w, []string{r.target, strconv.Itoa(r.connected), strconv.Itoa(r.failed), "-", "-", "-", "-", "failed", "-", "-"})
			continue
		}
		per, ok := r.perClientKiB()
		perCell := "-"
		if ok {
			perCell = fmt.Sprintf("%.2f", per)
		}
		heapCell := "-"
		if heap, ok := r.perClientHeapKiB(); ok {
			heapCell = fmt.Sprintf("%.2f", heap)
		}
		writeRow(w, []string{r.target, fmt.Sprintf("%d of %d", r.connected, r.clients), strconv.Itoa(r.failed),
			fmt.Sprintf("%.1f", r.connectTime.Seconds()), fmt.Sprintf("%.1f", float64(r.rssBefore)/1024), fmt.Sprintf("%.1f", float64(r.rssIdle)/1024),
			fmt.Sprintf("%.1f", float64(r.peakIdle)/1024), perCell, heapCell, fmt.Sprintf("%d / %d / %d", r.fdsBefore, r.fdsIdle, r.fdsClosed)})
	}
	w.WriteString("\n")
	var negotiated []string
	for _, r := range b.idle {
		if r.tls != "" {
			negotiated = append(negotiated, r.target+" "+r.tls)
		}
	}
	if len(negotiated) > 0 {
		fmt.Fprintf(w, "The idle TLS clients negotiated: %s.\n\n", strings.Join(negotiated, "; "))
	}
	var fine []string
	for _, r := range b.idle {
		if r.err == nil && r.afterClose == "" {
			fine = append(fine, r.target)
		}
	}
	if len(fine) > 0 {
		fmt.Fprintf(w, "Once the clients had gone, these closed all their sockets (open files back within %d of before) and answered `SELECT 1`: %s.\n\n",
			idleFDSlack, strings.Join(fine, ", "))
	}
	for _, r := range b.idle {
		if r.err != nil {
			fmt.Fprintf(w, "%s: not measured: %v\n\n", r.target, r.err)
		}
		if r.failed > 0 {
			fmt.Fprintf(w, "%s: **%d of %d clients failed**; the first error: %v\n\n", r.target, r.failed, r.clients, r.firstErr)
		}
		if r.afterClose != "" {
			fmt.Fprintf(w, "%s after the clients had gone: %s\n\n", r.target, r.afterClose)
		}
	}
}
