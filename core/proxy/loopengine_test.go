package proxy_test

// Tests of the event-loop engine (engine = "loop") at scale and under
// stalls: many clients sharing a few server connections across loops,
// ten thousand mostly idle clients, and logins and dials that stall while
// the loop has other clients to serve.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicedb/sluice/core/wire"
)

// Functions whose goroutines the tests count in a stack dump of the test
// process (the proxy runs in it): an event loop, and a session served on
// a goroutine of its own (logging in, or under the goroutine engine).
const (
	evloopRunFrame    = "sluice/core/engine/evloop.(*Loop).Run("
	sessionServeFrame = "sluice/core/engine.(*Session).Serve("
)

// goroutinesIn counts the goroutines with frame in their stack.
func goroutinesIn(frame string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(frame)) {
			count++
		}
	}
	return count
}

// awaitGoroutines waits up to 5s for want goroutines with frame (beyond
// base, counted before), and fails the test otherwise.
func awaitGoroutines(t *testing.T, what, frame string, base, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := goroutinesIn(frame) - base
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines in %s, want %d", what, n, strings.TrimSuffix(frame, "("), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connWatch polls pg_stat_activity for role "app"'s connections on a
// direct superuser connection until stop, keeping the maximum.
type connWatch struct {
	max, samples atomic.Int64
	err          error
	stop, done   chan struct{}
}

func watchServerConns(t *testing.T, e *testEnv, every time.Duration) *connWatch {
	t.Helper()
	su := e.superuser(t)
	w := &connWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			var n int64
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := su.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = 'app'").Scan(&n)
			cancel()
			if err != nil {
				w.err = err
				return
			}
			w.samples.Add(1)
			if n > w.max.Load() {
				w.max.Store(n)
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.finish)
	return w
}

// finish stops the poller and waits for it; it is idempotent.
func (w *connWatch) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// check fails the test if the poller failed, saw nothing, or saw more
// than limit connections.
func (w *connWatch) check(t *testing.T, limit int) {
	t.Helper()
	w.finish()
	if w.err != nil {
		t.Errorf("polling pg_stat_activity: %v", w.err)
	}
	if w.samples.Load() < 10 {
		t.Errorf("pg_stat_activity was polled only %d times", w.samples.Load())
	}
	if m := w.max.Load(); m > int64(limit) || m < 1 {
		t.Errorf("role app had at most %d server connections open at once, want between 1 and %d", m, limit)
	}
	t.Logf("server connections: at most %d in %d samples of pg_stat_activity", w.max.Load(), w.samples.Load())
}

// TestLoopShardFairness: 40 clients on 4 event loops share 3 server
// connections in transaction mode. The limit holds across loops (one pool
// per endpoint), every client finishes its transactions (no loop starves
// another's clients), and connections move between loops.
func TestLoopShardFairness(t *testing.T) {
	const (
		loops    = 4
		maxConns = 3
		clients  = 40
		txs      = 25
	)
	borrowTimeout := 30 * time.Second
	base := goroutinesIn(evloopRunFrame)
	baseSessions := goroutinesIn(sessionServeFrame)
	e := newEnv(t, envOptions{loops: loops,
		pool: fmt.Sprintf("max_connections = %d\n  borrow_timeout = %q", maxConns, borrowTimeout)})
	awaitGoroutines(t, "event loops", evloopRunFrame, base, loops)

	// Sessions are dealt to the loops in turn: client i and client i+1
	// are on different loops, and clients i and i+4 on the same one.
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = e.connect(t)
	}
	awaitGoroutines(t, "idle logged-in clients (on their loops)", sessionServeFrame, baseSessions, 0)

	w := watchServerConns(t, e, 2*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*borrowTimeout)
	defer cancel()
	type result struct {
		pids map[uint32]int
		done time.Duration
		txs  int
		err  error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.pids = make(map[uint32]int)
			<-gate
			start := time.Now()
			for k := range txs {
				if err := loopTransaction(ctx, c, r.pids); err != nil {
					r.err = fmt.Errorf("transaction %d: %w", k, err)
					return
				}
				r.txs++
			}
			r.done = time.Since(start)
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	w.check(t, maxConns)

	all := map[uint32]bool{}
	var slowest, fastest time.Duration
	perLoop := make([]time.Duration, loops)
	for i, r := range results {
		if r.err != nil {
			t.Errorf("client %d (after %d transactions): %v", i, r.txs, r.err)
			continue
		}
		if r.done > borrowTimeout {
			t.Errorf("client %d took %s for its %d transactions, more than borrow_timeout (%s)", i, r.done, txs, borrowTimeout)
		}
		if i == 0 || r.done > slowest {
			slowest = r.done
		}
		if i == 0 || r.done < fastest {
			fastest = r.done
		}
		perLoop[i%loops] = max(perLoop[i%loops], r.done)
		for pid := range r.pids {
			all[pid] = true
		}
	}
	if t.Failed() {
		return
	}
	// With 3 connections for 40 clients, neighbours (on different loops)
	// must have run on a common backend.
	for i := 0; i+1 < clients; i++ {
		shared := false
		for pid := range results[i].pids {
			if results[i+1].pids[pid] > 0 {
				shared = true
			}
		}
		if !shared {
			t.Errorf("client %d (backends %v) and client %d (backends %v), on different loops, shared no server connection",
				i, results[i].pids, i+1, results[i+1].pids)
		}
	}
	t.Logf("%d clients x %d transactions in %s; per-client completion: fastest %s, slowest %s (spread %s); slowest per loop %v; %d distinct backends",
		clients, txs, wall.Round(time.Millisecond), fastest.Round(time.Millisecond), slowest.Round(time.Millisecond),
		(slowest - fastest).Round(time.Millisecond), roundAll(perLoop), len(all))
}

// loopTransaction runs BEGIN; SELECT pg_backend_pid(); SELECT pg_sleep;
// COMMIT on c, counting the backend in pids.
func loopTransaction(ctx context.Context, c *pgx.Conn, pids map[uint32]int) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var pid uint32
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return err
	}
	pids[pid]++
	if _, err := tx.Exec(ctx, "SELECT pg_sleep(0.002)"); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// fileLimit raises RLIMIT_NOFILE to want (soft and hard) if it can, and
// returns the soft limit in effect.
func fileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	raised := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
		return want, nil
	}
	if lim.Cur < lim.Max { // without CAP_SYS_RESOURCE: up to the hard limit
		raised = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return lim.Max, nil
		}
	}
	return lim.Cur, nil
}

// loopReadMsg reads one backend message.
func loopReadMsg(nc net.Conn) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("message %q of bad length %d", hdr[0], n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(nc, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

// loopErrorText renders an ErrorResponse body.
func loopErrorText(body []byte) string {
	var code, msg string
	for _, f := range bytes.Split(body, []byte{0}) {
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case 'C':
			code = string(f[1:])
		case 'M':
			msg = string(f[1:])
		}
	}
	return fmt.Sprintf("%s (SQLSTATE %s)", msg, code)
}

// loopAuthCode returns the code of an Authentication message.
func loopAuthCode(typ byte, body []byte) (uint32, error) {
	if typ == wire.MsgErrorResponse {
		return 0, errors.New(loopErrorText(body))
	}
	if typ != wire.MsgAuthentication || len(body) < 4 {
		return 0, fmt.Errorf("got message %q, want an Authentication message", typ)
	}
	return binary.BigEndian.Uint32(body), nil
}

// loopReadAuth reads the next message, which must be an Authentication
// message: its code and body.
func loopReadAuth(nc net.Conn) (uint32, []byte, error) {
	typ, body, err := loopReadMsg(nc)
	if err != nil {
		return 0, nil, err
	}
	code, err := loopAuthCode(typ, body)
	return code, body, err
}

// loopStartup dials addr and sends a StartupMessage for user app and
// database appdb.
func loopStartup(addr string) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	msg := wire.EncodeStartup(nil, []wire.Param{{Name: "user", Value: appUser}, {Name: "database", Value: "appdb"}})
	if _, err := nc.Write(msg); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// loopAwaitReady reads the rest of a login, after AuthenticationOk, up to
// ReadyForQuery.
func loopAwaitReady(nc net.Conn) error {
	for {
		typ, body, err := loopReadMsg(nc)
		if err != nil {
			return err
		}
		switch typ {
		case wire.MsgReadyForQuery:
			return nil
		case wire.MsgErrorResponse:
			return errors.New(loopErrorText(body))
		}
	}
}

// loopMD5Login opens a raw protocol connection to addr and logs in with
// md5, up to ReadyForQuery.
func loopMD5Login(addr string) (net.Conn, error) {
	nc, err := loopStartup(addr)
	if err != nil {
		return nil, err
	}
	err = func() error {
		typ, body, err := loopReadMsg(nc)
		if err != nil {
			return err
		}
		code, err := loopAuthCode(typ, body)
		if err != nil {
			return err
		}
		if code != 5 || len(body) != 8 {
			return fmt.Errorf("authentication request %d, want md5 (5)", code)
		}
		inner := md5.Sum([]byte(appPassword + appUser))
		outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), body[4:8]...))
		resp := append([]byte("md5"+hex.EncodeToString(outer[:])), 0)
		if _, err := nc.Write(wire.AppendMessage(nil, wire.MsgPassword, resp)); err != nil {
			return err
		}
		if typ, body, err = loopReadMsg(nc); err != nil {
			return err
		}
		if code, err = loopAuthCode(typ, body); err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("authentication message %d after the md5 password, want AuthenticationOk", code)
		}
		return loopAwaitReady(nc)
	}()
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

// loopSimpleQuery sends sql as a simple Query and returns the first
// column of its rows, having read up to ReadyForQuery.
func loopSimpleQuery(nc net.Conn, sql string) ([]string, error) {
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	defer nc.SetDeadline(time.Time{})
	if _, err := nc.Write(wire.AppendQuery(nil, sql)); err != nil {
		return nil, err
	}
	var rows []string
	var qerr error
	for {
		typ, body, err := loopReadMsg(nc)
		if err != nil {
			return rows, fmt.Errorf("reading the answer: %w", err)
		}
		switch typ {
		case wire.MsgDataRow:
			if len(body) < 6 || binary.BigEndian.Uint16(body) < 1 {
				return rows, fmt.Errorf("malformed DataRow %q", body)
			}
			l := int(int32(binary.BigEndian.Uint32(body[2:])))
			if l < 0 || 6+l > len(body) {
				return rows, fmt.Errorf("DataRow with a column of length %d", l)
			}
			rows = append(rows, string(body[6:6+l]))
		case wire.MsgErrorResponse:
			qerr = errors.New(loopErrorText(body))
		case wire.MsgReadyForQuery:
			return rows, qerr
		}
	}
}

// loopBye sends Terminate and closes nc.
func loopBye(nc net.Conn) {
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	nc.Write(wire.AppendTerminate(nil))
	nc.Close()
}

// runBounded runs f(0..n-1) on at most workers goroutines and returns the
// errors, each with its index.
func runBounded(n, workers int, f func(i int) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("client %d: %w", i, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

// reportErrors fails the test with how many of what failed and the first
// few errors.
func reportErrors(t *testing.T, what string, errs []error) {
	t.Helper()
	if len(errs) == 0 {
		return
	}
	shown := errs[:min(len(errs), 5)]
	t.Errorf("%s: %d errors, the first: %v", what, len(errs), errors.Join(shown...))
}

// The 10,000 raw clients of TestLoopTenThousandClients run in a child
// process, the test binary again with crowdDriveEnv set to the proxy's
// address: RLIMIT_NOFILE bounds each process (20,000 here, and only a
// process with CAP_SYS_RESOURCE may raise it), and the clients and the
// proxy's side of them would need 20,000 descriptors in one. The parent
// sends the child one command a line on its stdin (login, query, close)
// and reads a driverReply for each on descriptor 3.
const (
	crowdDriveEnv   = "SLUICE_LOOPTEST_DRIVE"
	crowdClientsEnv = "SLUICE_LOOPTEST_CLIENTS"
	crowdWorkersEnv = "SLUICE_LOOPTEST_WORKERS"
)

// driverReply is what the child did for a command.
type driverReply struct {
	Op     string
	Took   time.Duration
	Errors int
	First  []string // the first few errors
	Fatal  string   // the child cannot go on
}

// driveClients is the child: it serves the parent's commands for n raw
// clients of addr, workers at a time.
func driveClients(t *testing.T, addr string) {
	n, _ := strconv.Atoi(os.Getenv(crowdClientsEnv))
	workers, _ := strconv.Atoi(os.Getenv(crowdWorkersEnv))
	out := os.NewFile(3, "replies")
	enc := json.NewEncoder(out)
	reply := func(r driverReply) {
		if err := enc.Encode(r); err != nil {
			t.Fatalf("replying to the parent: %v", err)
		}
	}
	if lim, err := fileLimit(uint64(n) + 1024); err != nil || lim < uint64(n)+64 {
		reply(driverReply{Fatal: fmt.Sprintf("RLIMIT_NOFILE %d (%v) is too low for %d connections", lim, err, n)})
		return
	}
	raw := make([]net.Conn, n)
	defer func() {
		for _, nc := range raw {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	cmds := bufio.NewScanner(os.Stdin)
	for cmds.Scan() {
		var f func(i int) error
		switch op := cmds.Text(); op {
		case "login":
			f = func(i int) error {
				nc, err := loopMD5Login(addr)
				raw[i] = nc
				return err
			}
		case "query":
			f = func(i int) error {
				if raw[i] == nil {
					return errors.New("not connected")
				}
				rows, err := loopSimpleQuery(raw[i], "SELECT 1")
				if err != nil {
					return err
				}
				if !slices.Equal(rows, []string{"1"}) {
					return fmt.Errorf("SELECT 1 returned %q", rows)
				}
				return nil
			}
		case "close":
			f = func(i int) error {
				if raw[i] != nil {
					loopBye(raw[i])
					raw[i] = nil
				}
				return nil
			}
		default:
			reply(driverReply{Op: op, Fatal: "unknown command"})
			return
		}
		start := time.Now()
		errs := runBounded(n, workers, f)
		r := driverReply{Op: cmds.Text(), Took: time.Since(start), Errors: len(errs)}
		for _, err := range errs[:min(len(errs), 5)] {
			r.First = append(r.First, err.Error())
		}
		reply(r)
	}
}

// clientDriver is the parent's handle on the child.
type clientDriver struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies *json.Decoder
	stderr  *bytes.Buffer
}

func startDriver(t *testing.T, addr string, n, workers int) *clientDriver {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &clientDriver{stderr: new(bytes.Buffer)}
	d.cmd = exec.Command(exe, "-test.run=^TestLoopTenThousandClients$", "-test.count=1", "-test.timeout=10m")
	d.cmd.Env = append(os.Environ(), crowdDriveEnv+"="+addr,
		fmt.Sprintf("%s=%d", crowdClientsEnv, n), fmt.Sprintf("%s=%d", crowdWorkersEnv, workers))
	d.cmd.ExtraFiles = []*os.File{w}
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	d.replies = json.NewDecoder(r)
	t.Cleanup(func() {
		d.stdin.Close() // the child leaves when its stdin ends
		exited := make(chan error, 1)
		go func() { exited <- d.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil && !t.Failed() {
				t.Errorf("client driver: %v\n%s", err, d.stderr)
			}
		case <-time.After(60 * time.Second):
			d.cmd.Process.Kill()
			<-exited
			t.Errorf("the client driver did not exit")
		}
		r.Close()
	})
	return d
}

// do runs a command in the child and returns its reply.
func (d *clientDriver) do(t *testing.T, op string) driverReply {
	t.Helper()
	if _, err := fmt.Fprintln(d.stdin, op); err != nil {
		t.Fatalf("client driver %s: %v", op, err)
	}
	var r driverReply
	if err := d.replies.Decode(&r); err != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		t.Fatalf("client driver %s: %v\n%s", op, err, d.stderr)
	}
	if r.Fatal != "" {
		t.Fatalf("client driver %s: %s", op, r.Fatal)
	}
	if r.Errors > 0 {
		t.Errorf("%s, %d clients: %d errors, the first: %s", op, r.Errors, r.Errors, strings.Join(r.First, "; "))
	}
	return r
}

// TestLoopTenThousandClients: 10,000 clients logged in, idle on one event
// loop, cost no goroutine each and do not stop 50 busy clients; then every
// one of them runs a query, through at most 20 server connections.
func TestLoopTenThousandClients(t *testing.T) {
	if addr := os.Getenv(crowdDriveEnv); addr != "" {
		driveClients(t, addr)
		return
	}
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	const (
		idle     = 10000
		active   = 50
		maxConns = 20
		workers  = 200
	)
	// The proxy's side of the clients, the busy clients and their server
	// connections, PostgreSQL's and the test's own.
	if lim, err := fileLimit(65536); err != nil || lim < idle+1000 {
		t.Skipf("RLIMIT_NOFILE is %d (%v), too low for the proxy's side of %d clients", lim, err, idle)
	}
	baseLoops := goroutinesIn(evloopRunFrame)
	baseSessions := goroutinesIn(sessionServeFrame)
	e := newEnv(t, envOptions{loops: 1, auth: "md5",
		pool: fmt.Sprintf("max_connections = %d\n  borrow_timeout = \"30s\"", maxConns)})
	awaitGoroutines(t, "event loops", evloopRunFrame, baseLoops, 1)
	w := watchServerConns(t, e, 5*time.Millisecond)

	d := startDriver(t, e.addr, idle, workers)
	login := d.do(t, "login")
	if t.Failed() {
		return
	}
	// Logged in and idle, they are the loop's: no goroutine each.
	awaitGoroutines(t, "10,000 idle clients", sessionServeFrame, baseSessions, 0)
	goroutines := runtime.NumGoroutine()
	if goroutines > 1000 {
		t.Errorf("%d goroutines in the proxy's process with %d idle clients connected", goroutines, idle)
	}

	// 50 busy clients while the 10,000 sit there.
	start := time.Now()
	busy := make([]*pgx.Conn, active)
	for i := range busy {
		busy[i] = e.connect(t)
	}
	busyLogin := time.Since(start)
	const busyFor = 3 * time.Second
	counts := make([]int, active)
	var slowestQuery atomic.Int64
	start = time.Now()
	errs := runBounded(active, active, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for time.Since(start) < busyFor {
			q := time.Now()
			var n int
			if err := busy[i].QueryRow(ctx, "SELECT $1::int + 1", counts[i]).Scan(&n); err != nil {
				return fmt.Errorf("query %d: %w", counts[i], err)
			}
			if n != counts[i]+1 {
				return fmt.Errorf("query %d answered %d", counts[i], n)
			}
			if d := int64(time.Since(q)); d > slowestQuery.Load() {
				slowestQuery.Store(d)
			}
			counts[i]++
		}
		return nil
	})
	reportErrors(t, "the busy clients", errs)
	total := 0
	for i, n := range counts {
		if n == 0 {
			t.Errorf("busy client %d ran no query in %s", i, busyFor)
		}
		total += n
	}

	// Every idle client wakes up for one query.
	wake := d.do(t, "query")
	bye := d.do(t, "close")
	for _, c := range busy {
		c.Close(context.Background())
	}

	// The proxy still serves a newcomer.
	fresh := e.connect(t)
	var n int
	if err := fresh.QueryRow(context.Background(), "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Errorf("a fresh client after the crowd left: %d, %v", n, err)
	}
	w.check(t, maxConns)
	t.Logf("%d logins (%d at a time) in %s; %d goroutines in the proxy's process with them idle; %d busy clients logged in in %s and ran %d queries in %s (slowest %s); %d idle clients' queries in %s; closing them in %s",
		idle, workers, login.Took.Round(time.Millisecond), goroutines, active, busyLogin.Round(time.Millisecond),
		total, busyFor, time.Duration(slowestQuery.Load()).Round(time.Millisecond), idle, wake.Took.Round(time.Millisecond),
		bye.Took.Round(time.Millisecond))
}

// scramLogin is a client's SCRAM-SHA-256 login over the raw protocol, in
// steps, so that it can stop half-way.
type scramLogin struct {
	nc          net.Conn
	nonce       string
	clientFirst string // client-first-message-bare
	serverFirst string
}

// beginSCRAM sends a StartupMessage for app to addr and reads the
// server's AuthenticationSASL, and sends nothing more.
func beginSCRAM(addr string) (*scramLogin, error) {
	nc, err := loopStartup(addr)
	if err != nil {
		return nil, err
	}
	typ, body, err := loopReadMsg(nc)
	if err == nil {
		var code uint32
		if code, err = loopAuthCode(typ, body); err == nil &&
			(code != 10 || !bytes.Contains(body[4:], []byte("SCRAM-SHA-256\x00"))) {
			err = fmt.Errorf("authentication request %d %q, want SASL with SCRAM-SHA-256", code, body[4:])
		}
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &scramLogin{nc: nc}, nil
}

// first sends the client-first-message and reads the server-first-message
// (AuthenticationSASLContinue), and sends nothing more.
func (s *scramLogin) first() error {
	s.nc.SetDeadline(time.Now().Add(30 * time.Second))
	defer s.nc.SetDeadline(time.Time{})
	var nonce [18]byte
	rand.Read(nonce[:])
	s.nonce = base64.StdEncoding.EncodeToString(nonce[:])
	s.clientFirst = "n=,r=" + s.nonce
	first := "n,," + s.clientFirst
	resp := append([]byte("SCRAM-SHA-256\x00"), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(resp[len(resp)-4:], uint32(len(first)))
	resp = append(resp, first...)
	if _, err := s.nc.Write(wire.AppendMessage(nil, wire.MsgPassword, resp)); err != nil {
		return err
	}
	code, body, err := loopReadAuth(s.nc)
	if err != nil {
		return err
	}
	if code != 11 {
		return fmt.Errorf("authentication message %d, want SASLContinue (11)", code)
	}
	s.serverFirst = string(body[4:])
	return nil
}

// finish sends the client-final-message and reads the login up to
// ReadyForQuery.
func (s *scramLogin) finish(password string) error {
	s.nc.SetDeadline(time.Now().Add(30 * time.Second))
	defer s.nc.SetDeadline(time.Time{})
	var nonce, salt string
	iter := 0
	for _, a := range strings.Split(s.serverFirst, ",") {
		switch {
		case strings.HasPrefix(a, "r="):
			nonce = a[2:]
		case strings.HasPrefix(a, "s="):
			salt = a[2:]
		case strings.HasPrefix(a, "i="):
			iter, _ = strconv.Atoi(a[2:])
		}
	}
	if !strings.HasPrefix(nonce, s.nonce) || len(nonce) == len(s.nonce) || iter <= 0 {
		return fmt.Errorf("malformed server-first-message %q", s.serverFirst)
	}
	saltBytes, err := base64.StdEncoding.DecodeString(salt)
	if err != nil {
		return fmt.Errorf("salt of %q: %w", s.serverFirst, err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, saltBytes, iter, sha256.Size)
	if err != nil {
		return err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	finalBare := "c=biws,r=" + nonce
	authMessage := s.clientFirst + "," + s.serverFirst + "," + finalBare
	sig := mac(storedKey[:], authMessage)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	final := finalBare + ",p=" + base64.StdEncoding.EncodeToString(proof)
	if _, err := s.nc.Write(wire.AppendMessage(nil, wire.MsgPassword, []byte(final))); err != nil {
		return err
	}
	for _, want := range []uint32{12, 0} { // SASLFinal, AuthenticationOk
		code, body, err := loopReadAuth(s.nc)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("authentication message %d, want %d", code, want)
		}
		if code == 12 {
			serverKey := mac(salted, "Server Key")
			want := "v=" + base64.StdEncoding.EncodeToString(mac(serverKey, authMessage))
			if string(body[4:]) != want {
				return fmt.Errorf("server signature %q, want %q", body[4:], want)
			}
		}
	}
	return loopAwaitReady(s.nc)
}

// latencies runs queries on c until it has run at least min of them and
// until() is true, and returns their number and the slowest.
func latencies(ctx context.Context, c *pgx.Conn, least int, until func() bool) (int, time.Duration, error) {
	var slowest time.Duration
	n := 0
	for n < least || !until() {
		start := time.Now()
		var got int
		if err := c.QueryRow(ctx, "SELECT $1::int", n).Scan(&got); err != nil {
			return n, slowest, fmt.Errorf("query %d: %w", n, err)
		}
		if got != n {
			return n, slowest, fmt.Errorf("query %d answered %d", n, got)
		}
		slowest = max(slowest, time.Since(start))
		n++
	}
	return n, slowest, nil
}

// blackholeGate is a TCP listener in front of a server: it forwards
// connections to it, or (blackhole) accepts them and never answers.
type blackholeGate struct {
	ln        net.Listener
	mu        sync.Mutex
	target    string
	blackhole bool
	closed    bool
	conns     map[net.Conn]bool
	held      int // connections accepted as a blackhole
	wg        sync.WaitGroup
}

func startGate(t *testing.T) *blackholeGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &blackholeGate{ln: ln, conns: map[net.Conn]bool{}}
	g.wg.Add(1)
	go g.serve()
	t.Cleanup(g.close)
	return g
}

func (g *blackholeGate) addr() string { return g.ln.Addr().String() }

// track records c, or closes it and reports false once the gate closed.
func (g *blackholeGate) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return false
	}
	g.conns[c] = true
	return true
}

func (g *blackholeGate) serve() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.track(c) {
			continue
		}
		g.mu.Lock()
		hole, target := g.blackhole, g.target
		if hole {
			g.held++
		}
		g.mu.Unlock()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if hole || target == "" {
				io.Copy(io.Discard, c) // never a word back
				c.Close()
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil || !g.track(s) {
				c.Close()
				return
			}
			go func() {
				io.Copy(s, c)
				s.Close()
			}()
			io.Copy(c, s)
			c.Close()
		}()
	}
}

// set makes the gate forward new connections to target or, with
// blackhole, swallow them; with cut it also closes every connection open.
func (g *blackholeGate) set(target string, blackhole, cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.target, g.blackhole = target, blackhole
	if cut {
		for c := range g.conns {
			c.Close()
		}
		clear(g.conns)
	}
}

// swallowed returns how many connections the gate took as a blackhole.
func (g *blackholeGate) swallowed() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

func (g *blackholeGate) close() {
	g.ln.Close()
	g.mu.Lock()
	g.closed = true
	for c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// TestLoopSlowLoginDoesNotStallLoop: with one event loop, a client whose
// SCRAM login stops half-way, and a client whose query waits for a server
// that accepts connections and never answers, do not delay the queries of
// another client on the same loop.
func TestLoopSlowLoginDoesNotStallLoop(t *testing.T) {
	const (
		queries = 200
		bound   = 500 * time.Millisecond
		stall   = 2 * time.Second
	)
	connectTimeout, borrowTimeout := time.Second, 3*time.Second
	gate := startGate(t)
	baseLoops := goroutinesIn(evloopRunFrame)
	baseSessions := goroutinesIn(sessionServeFrame)
	e := newEnv(t, envOptions{loops: 1,
		pool: fmt.Sprintf("connect_timeout = %q\n  borrow_timeout = %q", connectTimeout, borrowTimeout),
		extra: fmt.Sprintf(`
listen "slow" {
  address = "127.0.0.1:0"
  cluster = "slow"%s
}
cluster "slow" {
  writer = %q
}
`, clientTLSBlock(t), gate.addr())})
	gate.set(e.pg.Addr(), false, false)
	slowAddr := e.proxy.Addr("slow")
	if slowAddr == nil {
		t.Fatal(`no listener "slow"`)
	}
	awaitGoroutines(t, "event loops", evloopRunFrame, baseLoops, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The busy client, and one of listener "slow", both on the one loop.
	busy := e.connect(t)
	other := e.connectTo(t, slowAddr.String())
	if err := other.Ping(ctx); err != nil {
		t.Fatalf("listener slow, through the gate: %v", err)
	}
	awaitGoroutines(t, "two idle logged-in clients (on the loop)", sessionServeFrame, baseSessions, 0)

	t.Run("stalled SCRAM logins", func(t *testing.T) {
		// One client stops after AuthenticationSASL (it sends no
		// SASLInitialResponse), another after the server-first-message
		// (it sends no client-final-message).
		early, err := beginSCRAM(e.addr)
		if err != nil {
			t.Fatalf("starting a SCRAM login: %v", err)
		}
		defer loopBye(early.nc)
		late, err := beginSCRAM(e.addr)
		if err != nil {
			t.Fatalf("starting a SCRAM login: %v", err)
		}
		defer loopBye(late.nc)
		if err := late.first(); err != nil {
			t.Fatalf("SCRAM client-first-message: %v", err)
		}
		// Their logins, stalled, keep a goroutine each; the other two
		// clients are the loop's.
		awaitGoroutines(t, "two stalled logins", sessionServeFrame, baseSessions, 2)
		stalled := time.Now()
		n, slowest, err := latencies(ctx, busy, queries, func() bool { return time.Since(stalled) >= stall })
		if err != nil {
			t.Fatalf("while logins stall: %v", err)
		}
		if slowest > bound {
			t.Errorf("while SCRAM logins stalled: the slowest of %d queries took %s, more than %s", n, slowest, bound)
		}
		t.Logf("while two SCRAM logins stalled for %s: %d queries, slowest %s", time.Since(stalled).Round(time.Millisecond), n, slowest)
		// The stalled logins go on where they stopped.
		if err := early.first(); err != nil {
			t.Fatalf("resuming the login stalled after AuthenticationSASL: %v", err)
		}
		for i, s := range []*scramLogin{early, late} {
			if err := s.finish(appPassword); err != nil {
				t.Fatalf("completing stalled login %d: %v", i, err)
			}
			rows, err := loopSimpleQuery(s.nc, fmt.Sprintf("SELECT %d", 7+i))
			if err != nil || !slices.Equal(rows, []string{strconv.Itoa(7 + i)}) {
				t.Errorf("stalled login %d, logged in: SELECT %d: %q, %v", i, 7+i, rows, err)
			}
		}
		awaitGoroutines(t, "the late clients, logged in (on the loop)", sessionServeFrame, baseSessions, 0)
	})

	t.Run("dial to a blackhole", func(t *testing.T) {
		// The gate swallows new connections, and the server connection
		// the slow listener's pool holds is cut: its next borrow dials.
		gate.set(e.pg.Addr(), true, true)
		time.Sleep(50 * time.Millisecond) // idle long enough to be checked
		type outcome struct {
			err  error
			took time.Duration
		}
		done := make(chan outcome, 1)
		dialing := time.Now()
		go func() {
			_, err := other.Exec(ctx, "SELECT 1")
			done <- outcome{err, time.Since(dialing)}
		}()
		var got *outcome
		n, slowest, err := latencies(ctx, busy, queries, func() bool {
			if got == nil {
				select {
				case o := <-done:
					got = &o
				default:
				}
			}
			return got != nil
		})
		if err != nil {
			t.Fatalf("while a dial stalls: %v", err)
		}
		if slowest > bound {
			t.Errorf("while a dial stalled: the slowest of %d queries took %s, more than %s", n, slowest, bound)
		}
		t.Logf("while a dial to a blackhole stalled: %d queries, slowest %s; the stalled query ended after %s with: %v",
			n, slowest, got.took.Round(time.Millisecond), got.err)
		if h := gate.swallowed(); h == 0 {
			t.Errorf("the query of listener slow dialled no server (the blackhole took no connection)")
		}
		var pe *pgconn.PgError
		switch {
		case got.err == nil:
			t.Errorf("a query whose server never answers succeeded")
		case !errors.As(got.err, &pe):
			t.Errorf("a query whose server never answers: %v, want an ErrorResponse", got.err)
		case !strings.HasPrefix(pe.Code, "08") || len(pe.Code) != 5:
			t.Errorf("a query whose server never answers: SQLSTATE %s (%v), want class 08 (connection exception)", pe.Code, got.err)
		}
		if got.took < connectTimeout {
			t.Errorf("the query failed after %s, before connect_timeout (%s): it did not wait for the dial", got.took, connectTimeout)
		}
		// The refused client is still there, and is served once the
		// server answers again.
		gate.set(e.pg.Addr(), false, true)
		if err := other.Ping(ctx); err != nil {
			t.Errorf("listener slow's client, once its server answers: %v", err)
		}
	})
}
