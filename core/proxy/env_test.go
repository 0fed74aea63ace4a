package proxy_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/discovery"
	"github.com/sluicedb/sluice/discovery/consultest"
	"github.com/sluicedb/sluice/filters"
)

// Test credentials: the client-facing user and the role Sluice uses on the server.
const (
	appUser     = "app"
	appPassword = "app-secret"
	backendPass = "backend-secret"
)

// testEnv is a real PostgreSQL server with Sluice in front of it.
type testEnv struct {
	t     testing.TB
	pg    *pgtest.Server
	proxy *proxy.Proxy
	addr  string
	// replicas and readerAddr are set with envOptions.replicas: streaming
	// replicas of pg, and the address of listener "reader" (role reader).
	replicas   []*pgtest.Server
	readerAddr string
	consul     *consultest.Agent
	// splitAddr is the address of listener "split" (role split), with
	// envOptions.split.
	splitAddr string
	cfg       string
	done      chan struct{}
	stop      context.CancelFunc
}

// envOptions tunes newEnv.
type envOptions struct {
	pool    string // extra lines inside the pool block
	listen  string // extra lines inside the listen block
	auth    string // auth method
	pinning string // lines inside the pinning block
	cluster string // extra lines inside the cluster block
	admin   string // lines inside the admin block, such as address = "127.0.0.1:0"
	// replicas starts that many streaming replicas, lists them in the
	// cluster block and adds listener "reader" with role = "reader".
	replicas int
	// probe lists the primary and the replicas as cluster hosts, whose
	// roles Sluice's probes find (every 100ms), instead of writer and
	// replicas.
	probe bool
	// monitor gives the cluster block monitor credentials (probes every
	// 100ms), so that the writer and replicas it lists are probed.
	monitor bool
	// consul starts a Consul agent, registers the primary (tag primary,
	// id "pg0") and the replicas (tag replica, ids "pg1"...) as service
	// "pg-main", and makes it the cluster's source, with monitor
	// credentials.
	consul bool
	// split adds listener "split" with role = "split" (with replicas).
	split bool
	pg    pgtest.Options
	// filters are filter blocks (HCL), loaded as cmd/sluice loads them.
	filters string
	// extra is more configuration (HCL), such as a second cluster block.
	extra string
	// options are more proxy options, such as a proxy.WithTopology.
	options []proxy.Option
	// loops, when set, runs the loop engine with that many event loops,
	// whatever engine the suite runs under (SLUICE_ENGINE).
	loops int
}

// newEnv starts PostgreSQL with role "app" (password backendPass) and a
// proxy in front of it whose client user "app" has password appPassword.
func newEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	pgtest.RequireBinaries(t)
	if o.pg.Settings == nil {
		o.pg.Settings = map[string]string{"max_connections": "200"}
	}
	pg := pgtest.Start(t, o.pg)
	ctx := context.Background()
	if err := pg.CreateRole(ctx, appUser, backendPass); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateDatabase(ctx, "appdb", appUser); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, pg: pg}
	reader := ""
	members := fmt.Sprintf("writer = %q", pg.Addr())
	if o.replicas > 0 {
		var addrs []string
		for range o.replicas {
			r := pg.AddReplica(t)
			e.replicas = append(e.replicas, r)
			addrs = append(addrs, fmt.Sprintf("%q", r.Addr()))
		}
		members += "\n  replicas = [" + strings.Join(addrs, ", ") + "]"
		if o.probe {
			members = fmt.Sprintf("hosts = [%q, %s]\n  monitor_user = %q\n  monitor_password = %q\n  health_check_interval = \"100ms\"",
				pg.Addr(), strings.Join(addrs, ", "), pgtest.Superuser, pg.SuperuserPassword())
		}
	}
	monitor := fmt.Sprintf("monitor_user = %q\n  monitor_password = %q\n  health_check_interval = \"100ms\"",
		pgtest.Superuser, pg.SuperuserPassword())
	if o.monitor {
		members += "\n  " + monitor
	}
	if o.consul {
		e.consul = consultest.Start(t)
		e.consul.Register(t, "pg0", "pg-main", "127.0.0.1", pg.Port(), []string{"primary"}, nil)
		for i, r := range e.replicas {
			e.consul.Register(t, fmt.Sprintf("pg%d", i+1), "pg-main", "127.0.0.1", r.Port(), []string{"replica"}, nil)
		}
		members = fmt.Sprintf("consul {\n    address = %q\n    service = \"pg-main\"\n  }\n  %s", e.consul.Addr(), monitor)
	}
	// Under clientTLSEnv every listener takes TLS clients, unless the test
	// configures TLS on listener "main" itself.
	listenTLS := ""
	if !regexp.MustCompile(`(?m)^\s*tls\s*\{`).MatchString(o.listen) {
		listenTLS = clientTLSBlock(t)
	}
	if o.replicas > 0 {
		reader = `
listen "reader" {
  address = "127.0.0.1:0"
  cluster = "main"
  role    = "reader"` + listenTLS + `
}`
		if o.split {
			reader += `
listen "split" {
  address = "127.0.0.1:0"
  cluster = "main"
  role    = "split"` + listenTLS + `
}`
		}
	}
	if o.auth == "" {
		o.auth = "scram-sha-256"
	}
	e.cfg = fmt.Sprintf(`
listen "main" {
  address = "127.0.0.1:0"
  cluster = "main"
  %s%s
}%s
pool {
  %s
}
cluster "main" {
  %s
  %s
}
auth {
  method = %q
  user "app" {
    password         = %q
    backend_user     = "app"
    backend_password = %q
  }
}
pinning {
  %s
}
admin {
  %s
}
log {
  level = "debug"
}
shutdown_timeout = "2s"
%s
%s
`, o.listen, listenTLS, reader, o.pool, members, o.cluster, o.auth, appPassword, backendPass, o.pinning, o.admin, o.filters, o.extra)
	env := engineEnviron()
	if o.loops > 0 {
		env = []string{"SLUICE_ENGINE=loop", fmt.Sprintf("SLUICE_EVENT_LOOPS=%d", o.loops)}
	}
	cfg, err := config.Parse([]byte(e.cfg), env)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, e.cfg)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	opts, err := discovery.Options(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	fopts, err := filters.Options(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, fopts...)
	p, err := proxy.New(cfg, log, append(opts, o.options...)...)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	e.addr = p.Addr("main").String()
	if a := p.Addr("reader"); a != nil {
		e.readerAddr = a.String()
	}
	if a := p.Addr("split"); a != nil {
		e.splitAddr = a.String()
	}
	sctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		p.Serve(sctx)
	}()
	t.Cleanup(e.close)
	return e
}

// close shuts the proxy down and waits for it.
func (e *testEnv) close() {
	e.stop()
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		e.t.Errorf("proxy did not shut down within 30s")
	}
}

// url returns a connection string through Sluice.
func (e *testEnv) url(extra ...string) string { return e.urlOf(e.addr, extra...) }

// urlOf returns a connection string through the Sluice listener at addr,
// with extra parameters such as "application_name=x" and with
// sslmode=clientSSLMode() unless extra sets sslmode itself.
func (e *testEnv) urlOf(addr string, extra ...string) string {
	host, port, _ := strings.Cut(addr, ":")
	params := extra
	if !slices.ContainsFunc(extra, func(x string) bool { return strings.HasPrefix(x, "sslmode=") }) {
		params = append([]string{"sslmode=" + clientSSLMode()}, extra...)
	}
	return fmt.Sprintf("postgres://%s:%s@%s:%s/appdb?%s", appUser, appPassword, host, port, strings.Join(params, "&"))
}

// connect opens a pgx connection through Sluice.
func (e *testEnv) connect(t testing.TB, extra ...string) *pgx.Conn {
	t.Helper()
	return e.connectTo(t, e.addr, extra...)
}

// connectTo is connect for the Sluice listener at addr.
func (e *testEnv) connectTo(t testing.TB, addr string, extra ...string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(e.urlOf(addr, extra...))
	if err != nil {
		t.Fatal(err)
	}
	// Unnamed statements: named ones pin a client to its server connection
	// for now, and these tests are about multiplexing.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect through sluice: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// superuser opens a direct connection to PostgreSQL as the superuser.
func (e *testEnv) superuser(t testing.TB) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), e.pg.SuperuserConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// serverConns counts the connections role "app" has open on PostgreSQL.
func (e *testEnv) serverConns(t testing.TB, su *pgx.Conn) int {
	t.Helper()
	var n int
	if err := su.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = 'app'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// engineEnviron passes SLUICE_ENGINE and SLUICE_EVENT_LOOPS from the test's
// environment to a configuration, so that the whole suite runs under
// either engine (make test runs it under both).
func engineEnviron() []string {
	var env []string
	for _, name := range []string{"SLUICE_ENGINE", "SLUICE_EVENT_LOOPS"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// clientTLSEnv, set to 1 (or another true value of strconv.ParseBool),
// makes every client the test helpers open through Sluice use TLS
// (sslmode=require), and newEnv give every listener a certificate:
// SLUICE_TEST_CLIENT_TLS=1 go test ./core/proxy (make test runs it so).
// Tests that speak the protocol on a raw net.Conn stay plaintext, as do
// the ones about plaintext clients.
const clientTLSEnv = "SLUICE_TEST_CLIENT_TLS"

// clientTLS reports whether clientTLSEnv asks for TLS clients.
func clientTLS() bool {
	on, _ := strconv.ParseBool(os.Getenv(clientTLSEnv))
	return on
}

// clientSSLMode is the sslmode of the clients the test helpers open
// through Sluice (pgx, psql, pgbench, JDBC, node-postgres): "require"
// under clientTLSEnv, "disable" otherwise.
func clientSSLMode() string {
	if clientTLS() {
		return "require"
	}
	return "disable"
}

// clientTLSBlock returns, under clientTLSEnv, a listener's tls block with
// a new self-signed certificate (preceded by a newline, to end a listen
// block with), and "" otherwise. newEnv gives one to each listener it
// writes; a test that writes a listener of its own adds one too.
func clientTLSBlock(t testing.TB) string {
	t.Helper()
	if !clientTLS() {
		return ""
	}
	cert, key := writeCert(t)
	return fmt.Sprintf("\n  tls {\n    cert_file = %q\n    key_file  = %q\n  }", cert, key)
}

// writeCert writes a server certificate for 127.0.0.1 and localhost and
// its key, from a throwaway CA, and returns their paths.
func writeCert(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	ca, err := pgtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	st, err := ca.ServerTLS("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = st.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
