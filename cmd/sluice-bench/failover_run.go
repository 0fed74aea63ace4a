package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/discovery"
)

// Credentials of the failover runs: the client-facing user, the role
// Sluice uses on the servers, and their database.
const (
	failoverUser     = "app"
	failoverPassword = "app-secret"
	failoverBackend  = "backend-secret"
	failoverDatabase = "appdb"
)

// Bounds of one run.
const (
	failoverRunTimeout   = 3 * time.Minute
	firstWriteTimeout    = 30 * time.Second
	promotionPollEvery   = 2 * time.Millisecond
	failoverBorrowWait   = "30s"
	failoverShutdownWait = 30 * time.Second
)

// failoverRun is what one run measured.
type failoverRun struct {
	// toFirstWrite is from the moment the replica left recovery to the
	// first commit on it through Sluice.
	toFirstWrite time.Duration
	// stopToFirstWrite is from the primary's immediate shutdown to that
	// commit: the whole write outage, the promotion included.
	stopToFirstWrite time.Duration
	// promotion is how long pg_ctl promote took, from its start to the
	// replica leaving recovery.
	promotion time.Duration
	// told is, in discovery mode, when Consul named the new writer,
	// after the promotion; zero in probe mode.
	told time.Duration
	// committed and failed count the load's transactions; codes the
	// failed ones' SQLSTATEs ("" for errors without one).
	committed, failed int64
	codes             map[string]int
	// maxFailedPerClient is the most failed transactions of one client.
	maxFailedPerClient int
	// disconnected counts load clients whose connection was closed.
	disconnected int
	// idleKept counts idle clients whose next transaction, after the
	// failover, committed on the new writer without reconnecting.
	idleKept, idle int
	// err says why the run could not be completed; the fields above are
	// then not to be reported.
	err error
}

// runOnce makes one failover run in mode n-th of its mode: a fresh primary
// and replica, registered in Consul under a service of the run's own, and
// a Sluice in this process in front of them.
func (f *failoverBench) runOnce(ctx context.Context, mode string, n int) (r failoverRun) {
	ctx, cancel := context.WithTimeout(ctx, failoverRunTimeout)
	defer cancel()
	var err error
	r, err = f.failover(ctx, mode, n)
	if err != nil {
		r.err = err
	}
	return r
}

func (f *failoverBench) failover(ctx context.Context, mode string, n int) (failoverRun, error) {
	var r failoverRun
	f.logf("%-9s run %d: starting a primary and its replica", mode, n)
	primary, err := pgtest.StartServer(pgtest.Options{Settings: map[string]string{"max_connections": "200"}})
	if err != nil {
		return r, err
	}
	defer primary.Stop()
	if f.env.postgres == "" {
		f.env.postgres = serverVersion(ctx, primary)
	}
	if err := primary.CreateRole(ctx, failoverUser, failoverBackend); err != nil {
		return r, err
	}
	if err := primary.CreateDatabase(ctx, failoverDatabase, failoverUser); err != nil {
		return r, err
	}
	if err := execOn(ctx, primary.ConnString(failoverUser, failoverBackend, failoverDatabase),
		"CREATE TABLE t (id bigserial PRIMARY KEY, client int, at text)"); err != nil {
		return r, err
	}
	replica, err := primary.StartReplica()
	if err != nil {
		return r, err
	}
	defer replica.Stop()
	if err := waitReplayed(ctx, primary, replica); err != nil {
		return r, err
	}

	service := fmt.Sprintf("postgres-failover-%s-%d", mode, n)
	oldID, newID := service+"-primary", service+"-replica"
	if err := f.agent.RegisterService(oldID, service, pgtest.Host, primary.Port(), []string{"primary"}, nil); err != nil {
		return r, err
	}
	if err := f.agent.RegisterService(newID, service, pgtest.Host, replica.Port(), []string{"replica"}, nil); err != nil {
		return r, err
	}
	defer func() {
		for _, id := range []string{oldID, newID} {
			_ = f.agent.DeregisterService(id)
		}
	}()

	p, stopProxy, err := f.startSluice(mode, n, service, primary.SuperuserPassword())
	if err != nil {
		return r, err
	}
	defer stopProxy()
	addr := p.Addr("main").(*net.TCPAddr)

	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	connect := func() (*pgx.Conn, error) {
		c, err := f.connect(ctx, addr)
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	}
	idle := make([]*pgx.Conn, f.opts.idle)
	for i := range idle {
		if idle[i], err = connect(); err != nil {
			return r, fmt.Errorf("connecting idle client %d: %w", i, err)
		}
		if _, err := idle[i].Exec(ctx, "INSERT INTO t (client, at) VALUES (-1, 'before')"); err != nil {
			return r, fmt.Errorf("idle client %d before the failover: %w", i, err)
		}
	}
	writers := make([]*pgx.Conn, f.opts.writers)
	for i := range writers {
		if writers[i], err = connect(); err != nil {
			return r, fmt.Errorf("connecting load client %d: %w", i, err)
		}
	}

	newPort := replica.Port()
	var firstOnNew atomic.Int64 // unix nanos of the first commit on the new writer
	var committed, failed, disconnected atomic.Int64
	perClient := make([]int, len(writers))
	var codesMu sync.Mutex
	codes := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var port int
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, "INSERT INTO t (client, at) VALUES ($1, 'during') RETURNING inet_server_port()", i).Scan(&port)
				})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					perClient[i]++
					codesMu.Lock()
					codes[sqlstateOf(err)]++
					codesMu.Unlock()
					if c.IsClosed() {
						disconnected.Add(1)
						return
					}
					continue
				}
				committed.Add(1)
				if port == newPort {
					firstOnNew.CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	select {
	case <-time.After(f.opts.load):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	if committed.Load() == 0 {
		return r, errors.New("no transaction committed before the failure")
	}

	// The moment the replica leaves recovery, seen by a connection of its
	// own polling every few milliseconds: pg_ctl promote -w only looks
	// every 100ms.
	left := make(chan time.Time, 1)
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	watch, err := pgx.Connect(ctx, replica.SuperuserConnString("postgres"))
	if err != nil {
		return r, err
	}
	defer watch.Close(context.Background())
	go func() {
		for {
			var inRecovery bool
			if err := watch.QueryRow(pollCtx, "SELECT pg_catalog.pg_is_in_recovery()").Scan(&inRecovery); err != nil {
				return
			}
			if !inRecovery {
				left <- time.Now()
				return
			}
			select {
			case <-pollCtx.Done():
				return
			case <-time.After(promotionPollEvery):
			}
		}
	}()

	f.logf("%-9s run %d: stopping the primary (immediate) and promoting the replica", mode, n)
	if err := primary.Stop(); err != nil {
		return r, err
	}
	stopped := time.Now()
	if err := replica.Promote(ctx); err != nil {
		return r, err
	}
	var promoted time.Time
	select {
	case promoted = <-left:
	case <-time.After(5 * time.Second):
		return r, errors.New("the promoted replica was never seen out of recovery by the watching connection")
	}
	r.promotion = promoted.Sub(stopped)
	if mode == modeDiscovery {
		if err := f.agent.DeregisterService(oldID); err != nil {
			return r, err
		}
		if err := f.agent.RegisterService(newID, service, pgtest.Host, replica.Port(), []string{"primary"}, nil); err != nil {
			return r, err
		}
		r.told = time.Since(promoted)
	}

	deadline := time.Now().Add(firstWriteTimeout)
	for firstOnNew.Load() == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if firstOnNew.Load() == 0 {
		return r, fmt.Errorf("no write committed on the new writer within %v of the promotion", firstWriteTimeout)
	}
	time.Sleep(f.opts.after)
	close(stop)
	wg.Wait()
	first := time.Unix(0, firstOnNew.Load())
	r.toFirstWrite = first.Sub(promoted)
	r.stopToFirstWrite = first.Sub(stopped)
	r.committed, r.failed, r.disconnected = committed.Load(), failed.Load(), int(disconnected.Load())
	r.codes = codes
	for _, k := range perClient {
		r.maxFailedPerClient = max(r.maxFailedPerClient, k)
	}

	r.idle = len(idle)
	for i, c := range idle {
		var port int
		err := c.QueryRow(ctx, "INSERT INTO t (client, at) VALUES (-1, 'after') RETURNING inet_server_port()").Scan(&port)
		switch {
		case err != nil:
			f.notes = append(f.notes, fmt.Sprintf("%s run %d: idle client %d after the failover: %v", mode, n, i, err))
		case port != newPort:
			f.notes = append(f.notes, fmt.Sprintf("%s run %d: idle client %d wrote on port %d, not the new writer's %d", mode, n, i, port, newPort))
		default:
			r.idleKept++
		}
	}
	return r, nil
}

// startSluice starts a Sluice in this process whose cluster is the run's
// Consul service, and returns it with the function that shuts it down.
func (f *failoverBench) startSluice(mode string, n int, service, monitorPassword string) (*proxy.Proxy, func(), error) {
	text := fmt.Sprintf(`
listen "main" {
  address = "127.0.0.1:0"
  cluster = "main"
}
pool {
  mode            = "transaction"
  max_connections = %d
  borrow_timeout  = %q
}
cluster "main" {
  consul {
    address = %q
    service = %q
  }
  promotion             = %q
  monitor_user          = %q
  monitor_password      = %q
  health_check_interval = %q
}
auth {
  method = "scram-sha-256"
  user %q {
    password         = %q
    backend_user     = %q
    backend_password = %q
  }
}
log {
  level = "info"
}
shutdown_timeout = "1s"
`, f.opts.poolSize, failoverBorrowWait, f.agent.Addr(), service, mode, pgtest.Superuser, monitorPassword,
		f.opts.interval.String(), failoverUser, failoverPassword, failoverUser, failoverBackend)
	cfg, err := config.Parse([]byte(text), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("the generated configuration is invalid: %w\n%s", err, text)
	}
	log := f.sluice.With(zap.String("mode", mode), zap.Int("run", n))
	opts, err := discovery.Options(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	p, err := proxy.New(cfg, log, opts...)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(ctx)
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(failoverShutdownWait):
			f.notes = append(f.notes, fmt.Sprintf("%s run %d: Sluice did not shut down within %v", mode, n, failoverShutdownWait))
		}
	}
	return p, stop, nil
}

// connect opens a client connection through Sluice.
func (f *failoverBench) connect(ctx context.Context, addr *net.TCPAddr) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable",
		failoverUser, failoverPassword, net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port)), failoverDatabase))
	if err != nil {
		return nil, err
	}
	if f.opts.execMode == "exec" {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// waitReplayed waits until replica has replayed primary's WAL up to its
// current position.
func waitReplayed(ctx context.Context, primary, replica *pgtest.Server) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w, err := pgx.Connect(ctx, primary.SuperuserConnString("postgres"))
	if err != nil {
		return err
	}
	defer w.Close(context.Background())
	var lsn string
	if err := w.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return err
	}
	c, err := pgx.Connect(ctx, replica.SuperuserConnString("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for {
		var done bool
		if err := c.QueryRow(ctx, "SELECT pg_catalog.pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&done); err != nil {
			return fmt.Errorf("waiting for the replica to replay %s: %w", lsn, err)
		}
		if done {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// execOn runs sql on a connection of its own.
func execOn(ctx context.Context, url, sql string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// serverVersion returns the server's server_version, or "".
func serverVersion(ctx context.Context, s *pgtest.Server) string {
	c, err := pgx.Connect(ctx, s.SuperuserConnString("postgres"))
	if err != nil {
		return ""
	}
	defer c.Close(context.Background())
	var v string
	if err := c.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return ""
	}
	return v
}

// sqlstateOf returns the SQLSTATE of a PostgreSQL error, or "".
func sqlstateOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// sortedCodes renders SQLSTATE counts as "08007 x20, 40001 x3".
func sortedCodes(codes map[string]int) string {
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		name := k
		if name == "" {
			name = "no SQLSTATE"
		}
		out += fmt.Sprintf("%s ×%d", name, codes[k])
	}
	return out
}
