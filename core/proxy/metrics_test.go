package proxy_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/core/topology"
)

// adminOn is the admin block that serves /metrics and /readyz on a free port.
const adminOn = `address = "127.0.0.1:0"`

// metricSet is one scrape of /metrics, by family name.
type metricSet map[string]*dto.MetricFamily

// scrape fetches and parses /metrics.
func (e *testEnv) scrape(t testing.TB) metricSet {
	t.Helper()
	code, body := e.admin(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not in the text format: %v\n%s", err, body)
	}
	return fams
}

// admin GETs path on the admin address and returns the status and body.
func (e *testEnv) admin(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + e.proxy.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// series returns the series of family name whose labels include the
// given name, value pairs.
func (m metricSet) series(name string, labels ...string) []*dto.Metric {
	var out []*dto.Metric
	f := m[name]
	if f == nil {
		return nil
	}
next:
	for _, s := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range s.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// value adds up the matching series of a counter or gauge, or the sample
// counts of a histogram.
func (m metricSet) value(name string, labels ...string) float64 {
	v := 0.0
	for _, s := range m.series(name, labels...) {
		switch {
		case s.Counter != nil:
			v += s.Counter.GetValue()
		case s.Gauge != nil:
			v += s.Gauge.GetValue()
		case s.Histogram != nil:
			v += float64(s.Histogram.GetSampleCount())
		}
	}
	return v
}

// bucket returns the cumulative count of the matching histograms' bucket le.
func (m metricSet) bucket(name string, le float64, labels ...string) uint64 {
	var n uint64
	for _, s := range m.series(name, labels...) {
		for _, b := range s.GetHistogram().GetBucket() {
			if b.GetUpperBound() == le {
				n += b.GetCumulativeCount()
			}
		}
	}
	return n
}

// await scrapes until cond holds, for up to 15s.
func (e *testEnv) await(t testing.TB, what string, cond func(m metricSet) bool) metricSet {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := e.scrape(t)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Labels of the main listener, and of its pool for user app and database appdb.
var (
	mainListener = []string{"cluster", "main", "role", "writer"}
	appPool      = []string{"cluster", "main", "role", "writer", "database", "appdb", "user", "app"}
)

func with(labels []string, more ...string) []string {
	return append(append([]string(nil), labels...), more...)
}

// /metrics follows what clients do: connections, refused logins by
// reason, queries and transactions, server connections by state, borrow
// waits and timeouts, pins, cancel requests and reloads.
func TestMetrics(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 1\n  borrow_timeout = \"2s\"", admin: adminOn})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	gauge := func(m metricSet, want float64, name string, labels ...string) {
		t.Helper()
		if got := m.value(name, labels...); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}

	m := e.scrape(t)
	gauge(m, 0, "sluice_client_connections", mainListener...)
	gauge(m, 1, "sluice_topology_changes_total", "cluster", "main")
	gauge(m, 1, "sluice_writer_known", "cluster", "main")
	c := e.connect(t)
	m = e.scrape(t)
	gauge(m, 1, "sluice_client_connections", mainListener...)
	gauge(m, 1, "sluice_client_connections_accepted_total", mainListener...)
	gauge(m, 1, "sluice_server_connections_opened_total", appPool...)

	// Refused logins, with their reason.
	host, port, _ := strings.Cut(e.addr, ":")
	_, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:wrong@%s:%s/appdb?sslmode=%s", appUser, host, port, clientSSLMode()))
	if code := sqlstate(err); code != "28P01" {
		t.Fatalf("login with a wrong password: %v, want 28P01", err)
	}
	garbage, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	garbage.Write([]byte{0, 0, 0, 8, 1, 2, 3, 4})
	io.Copy(io.Discard, garbage)
	garbage.Close()
	m = e.await(t, "the refused logins", func(m metricSet) bool {
		return m.value("sluice_client_connections_rejected_total", with(mainListener, "reason", "auth_failed")...) == 1 &&
			m.value("sluice_client_connections_rejected_total", with(mainListener, "reason", "bad_startup")...) == 1 &&
			m.value("sluice_client_connections", mainListener...) == 1
	})
	gauge(m, 3, "sluice_client_connections_accepted_total", mainListener...)
	gauge(m, 2, "sluice_client_connections_rejected_total", mainListener...)

	// Five statements in implicit transactions and one explicit
	// transaction of three requests.
	before := e.scrape(t)
	for range 5 {
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	m = e.scrape(t)
	for _, d := range []struct {
		name string
		want float64
	}{{"sluice_queries_total", 8}, {"sluice_transactions_total", 6}, {"sluice_server_response_seconds", 8}} {
		if got := m.value(d.name, appPool...) - before.value(d.name, appPool...); got != d.want {
			t.Errorf("%s went up by %v, want %v", d.name, got, d.want)
		}
	}
	gauge(m, 1, "sluice_server_connections", with(appPool, "state", "idle")...)

	// A client in a transaction holds the only connection: a second one
	// waits, then times out.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	m = e.scrape(t)
	gauge(m, 1, "sluice_server_connections", with(appPool, "state", "in_transaction")...)
	gauge(m, 0, "sluice_server_connections", with(appPool, "state", "idle")...)
	gauge(m, 0, "sluice_server_connections", with(appPool, "state", "borrowed")...)
	c2 := e.connect(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c2.Exec(ctx, "SELECT 2")
		errc <- err
	}()
	e.await(t, "a borrower waiting", func(m metricSet) bool { return m.value("sluice_borrow_waiting", appPool...) == 1 })
	if err := <-errc; sqlstate(err) != "53300" {
		t.Fatalf("a borrow beyond max_connections: %v, want 53300", err)
	}
	m = e.scrape(t)
	gauge(m, 1, "sluice_borrow_timeouts_total", with(appPool, "reason", "pool_full")...)
	gauge(m, 0, "sluice_borrow_waiting", appPool...)
	if n, under1s := m.value("sluice_borrow_wait_seconds", appPool...), m.bucket("sluice_borrow_wait_seconds", 1, appPool...); float64(under1s) != n-1 {
		t.Errorf("%d of %v borrows waited under 1s, want all but the one that timed out after 2s", under1s, n)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// A pinned session, by reason.
	if _, err := c.Exec(ctx, "LISTEN metrics_test"); err != nil {
		t.Fatal(err)
	}
	m = e.scrape(t)
	gauge(m, 1, "sluice_session_pins_total", "reason", "LISTEN")
	gauge(m, 1, "sluice_pinned_sessions", "reason", "LISTEN")
	gauge(m, 1, "sluice_server_connections", with(appPool, "state", "pinned")...)
	if _, err := c.Exec(ctx, "UNLISTEN *"); err != nil {
		t.Fatal(err)
	}
	m = e.scrape(t)
	gauge(m, 1, "sluice_session_pins_total", "reason", "LISTEN")
	gauge(m, 0, "sluice_pinned_sessions", "reason", "LISTEN")
	gauge(m, 0, "sluice_server_connections", with(appPool, "state", "pinned")...)
	gauge(m, 1, "sluice_server_connections", with(appPool, "state", "idle")...)

	// Cancel requests: for an idle session, with a key no session has, and
	// one forwarded to a running query, whose connection is then closed.
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	sendCancel(t, e.addr, c.PgConn().PID()+1, 1)
	e.await(t, "the idle and unknown cancels", func(m metricSet) bool {
		return m.value("sluice_cancel_requests_total", "outcome", "idle") == 1 &&
			m.value("sluice_cancel_requests_total", "outcome", "no_session") == 1
	})
	su := e.superuser(t)
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(30) /* metrics-cancel */")
		errc <- err
	}()
	waitForQuery(t, su, "metrics-cancel")
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; sqlstate(err) != "57014" {
		t.Fatalf("the cancelled query ended with %v, want 57014", err)
	}
	m = e.await(t, "the forwarded cancel", func(m metricSet) bool {
		return m.value("sluice_cancel_requests_total", "outcome", "forwarded") == 1
	})
	gauge(m, 0, "sluice_cancel_requests_total", "outcome", "failed")
	gauge(m, 1, "sluice_server_connections_closed_total", with(appPool, "reason", "broken")...)

	// Reloads: one that applies, one Reload refuses, one that failed
	// before it (a file that does not parse, as cmd/sluice reports).
	cfg, err := config.Parse([]byte(e.cfg), engineEnviron())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	bad, err := config.Parse([]byte(strings.Replace(e.cfg, `listen "main"`, `listen "renamed"`, 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Reload(bad); err == nil {
		t.Fatal("a reload that renames a listener was accepted")
	}
	e.proxy.ReloadFailed()
	m = e.scrape(t)
	gauge(m, 1, "sluice_config_reloads_total", "result", "ok")
	gauge(m, 2, "sluice_config_reloads_total", "result", "failed")
	gauge(m, 1, "sluice_topology_changes_total", "cluster", "main") // the same cluster block changes nothing

	// Every family is exposed with its type.
	types := map[string]dto.MetricType{
		"sluice_client_connections":                dto.MetricType_GAUGE,
		"sluice_client_connections_accepted_total": dto.MetricType_COUNTER,
		"sluice_client_connections_rejected_total": dto.MetricType_COUNTER,
		"sluice_server_connections":                dto.MetricType_GAUGE,
		"sluice_server_connections_opened_total":   dto.MetricType_COUNTER,
		"sluice_server_connections_closed_total":   dto.MetricType_COUNTER,
		"sluice_server_connect_errors_total":       dto.MetricType_COUNTER,
		"sluice_borrow_wait_seconds":               dto.MetricType_HISTOGRAM,
		"sluice_borrow_waiting":                    dto.MetricType_GAUGE,
		"sluice_borrow_timeouts_total":             dto.MetricType_COUNTER,
		"sluice_queries_total":                     dto.MetricType_COUNTER,
		"sluice_transactions_total":                dto.MetricType_COUNTER,
		"sluice_server_response_seconds":           dto.MetricType_HISTOGRAM,
		"sluice_session_pins_total":                dto.MetricType_COUNTER,
		"sluice_cancel_requests_total":             dto.MetricType_COUNTER,
		"sluice_config_reloads_total":              dto.MetricType_COUNTER,
		"sluice_topology_changes_total":            dto.MetricType_COUNTER,
		"sluice_writer_known":                      dto.MetricType_GAUGE,
		"sluice_replicas":                          dto.MetricType_GAUGE,
		"process_cpu_seconds_total":                dto.MetricType_COUNTER,
	}
	for name, typ := range types {
		if f := m[name]; f == nil {
			t.Errorf("%s is missing", name)
		} else if f.GetType() != typ {
			t.Errorf("%s is a %s, want a %s", name, f.GetType(), typ)
		}
	}

	// Clients leave.
	c.Close(ctx)
	c2.Close(ctx)
	e.await(t, "no client connections", func(m metricSet) bool {
		return m.value("sluice_client_connections", mainListener...) == 0
	})
}

// sendCancel sends a CancelRequest for pid and secret to addr.
func sendCancel(t *testing.T, addr string, pid, secret uint32) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b, 16)
	binary.BigEndian.PutUint32(b[4:], 80877102)
	binary.BigEndian.PutUint32(b[8:], pid)
	binary.BigEndian.PutUint32(b[12:], secret)
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, conn) // the proxy closes it
}

// /readyz answers 503 naming the cluster while no writer is known (its
// primary stopped, found by probing), and 200 again once a replica is
// promoted; the failover is counted, and so is the time until the first
// write after it.
func TestReadyzFollowsTheWriter(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, probe: true, pool: `borrow_timeout = "30s"`, admin: adminOn})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	awaitReady := func(want int) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := e.admin(t, "/readyz")
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz answers %d (%q), want %d", code, body, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	awaitReady(http.StatusOK)
	m := e.await(t, "the writer and the replica", func(m metricSet) bool {
		return m.value("sluice_writer_known", "cluster", "main") == 1 && m.value("sluice_replicas", "cluster", "main") == 1
	})
	if n := m.value("sluice_topology_changes_total", "cluster", "main"); n < 1 {
		t.Errorf("sluice_topology_changes_total = %v, want at least 1", n)
	}
	c := e.connect(t)
	if _, err := c.Exec(ctx, "CREATE TABLE t (a int)"); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t)

	if err := e.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	body := awaitReady(http.StatusServiceUnavailable)
	if !strings.Contains(body, `cluster "main" has no known writer`) {
		t.Errorf("/readyz without a writer says %q, want it to name the cluster", body)
	}
	m = e.scrape(t)
	if m.value("sluice_writer_known", "cluster", "main") != 0 || m.value("sluice_failovers_total", "cluster", "main") != 0 {
		t.Errorf("with the writer lost: writer_known %v, failovers %v; want 0, 0",
			m.value("sluice_writer_known", "cluster", "main"), m.value("sluice_failovers_total", "cluster", "main"))
	}

	if err := e.replicas[0].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	awaitReady(http.StatusOK)
	m = e.scrape(t)
	if n := m.value("sluice_failovers_total", "cluster", "main"); n != 1 {
		t.Errorf("sluice_failovers_total = %v after one failover, want 1", n)
	}
	if n := m.value("sluice_writer_recovery_seconds", "cluster", "main"); n != 0 {
		t.Errorf("writer recovery observed %v times before any write", n)
	}
	if _, err := c.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("a write after the failover: %v", err)
	}
	m = e.scrape(t)
	if n := m.value("sluice_writer_recovery_seconds", "cluster", "main"); n != 1 {
		t.Errorf("writer recovery observed %v times after the first write, want 1", n)
	}
	if sum := m.series("sluice_writer_recovery_seconds", "cluster", "main"); len(sum) == 1 && sum[0].GetHistogram().GetSampleSum() <= 0 {
		t.Errorf("writer recovery took %vs, want more than 0", sum[0].GetHistogram().GetSampleSum())
	}
}

// sinkSource is a topology source that hands its Sink to the test, which
// then reports through it what discovery would: snapshots, lags, status.
type sinkSource struct{ sinks chan topology.Sink }

func (s *sinkSource) Run(ctx context.Context, sink topology.Sink) {
	s.sinks <- sink
	<-ctx.Done()
}

// The replica lag, bans and source status that discovery reports are
// exposed per replica and per source.
func TestMetricsReplicaLagAndDiscovery(t *testing.T) {
	src := &sinkSource{sinks: make(chan topology.Sink, 1)}
	e := newEnv(t, envOptions{replicas: 1, admin: adminOn, options: []proxy.Option{proxy.WithTopology("main", src)}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sink topology.Sink
	select {
	case sink = <-src.sinks:
	case <-ctx.Done():
		t.Fatal("the topology source was never run")
	}
	if code, body := e.admin(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the source reported a writer: %d %q, want 503", code, body)
	}
	writer := topology.Endpoint{Addr: e.pg.Addr(), Role: topology.Writer, Healthy: true, Source: "test"}
	replica := topology.Endpoint{Addr: e.replicas[0].Addr(), Role: topology.Replica, Healthy: true, Source: "test"}
	sink.Publish(topology.Snapshot{Writer: &writer, Replicas: []topology.Endpoint{replica}})

	// The replica's real lag, as a probe would measure it.
	w, err := pgx.Connect(ctx, e.pg.SuperuserConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	r, err := pgx.Connect(ctx, e.replicas[0].SuperuserConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	var writerLSN string
	if err := w.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&writerLSN); err != nil {
		t.Fatal(err)
	}
	var lag int64
	if err := r.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn())::bigint", writerLSN).Scan(&lag); err != nil {
		t.Fatal(err)
	}
	lastOK := time.Now().Add(-3 * time.Second)
	sink.ReportLag(replica.Addr, topology.Lag{Bytes: lag, Seconds: 0.25, At: time.Now()})
	sink.ReportStatus(topology.Status{Source: "test", LastOK: lastOK})

	if code, body := e.admin(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with a writer: %d %q, want 200", code, body)
	}
	m := e.scrape(t)
	at := []string{"cluster", "main", "replica", replica.Addr}
	if len(m.series("sluice_replica_lag_bytes", at...)) != 1 || m.value("sluice_replica_lag_bytes", at...) != float64(lag) {
		t.Errorf("sluice_replica_lag_bytes = %v (%d series), want %d", m.value("sluice_replica_lag_bytes", at...), len(m.series("sluice_replica_lag_bytes", at...)), lag)
	}
	if v := m.value("sluice_replica_lag_seconds", at...); v != 0.25 {
		t.Errorf("sluice_replica_lag_seconds = %v, want 0.25", v)
	}
	src1 := []string{"cluster", "main", "source", "test"}
	if v := m.value("sluice_discovery_staleness_seconds", src1...); v < 3 || v > 60 {
		t.Errorf("sluice_discovery_staleness_seconds = %v, want about 3", v)
	}
	if len(m.series("sluice_discovery_error", src1...)) != 1 || m.value("sluice_discovery_error", src1...) != 0 {
		t.Errorf("sluice_discovery_error = %v while the source is fine, want 0", m.value("sluice_discovery_error", src1...))
	}
	if v := m.value("sluice_replicas_banned", "cluster", "main"); v != 0 {
		t.Errorf("sluice_replicas_banned = %v with a healthy replica", v)
	}

	// The source bans the replica for its lag, then fails itself.
	replica.Healthy, replica.Why = false, "lagging"
	sink.Publish(topology.Snapshot{Writer: &writer, Replicas: []topology.Endpoint{replica}})
	sink.ReportStatus(topology.Status{Source: "test", LastOK: lastOK, Err: "connection refused"})
	m = e.scrape(t)
	if v := m.value("sluice_replicas_banned", "cluster", "main", "why", "lagging"); v != 1 {
		t.Errorf("sluice_replicas_banned{why=lagging} = %v, want 1", v)
	}
	if v := m.value("sluice_discovery_error", src1...); v != 1 {
		t.Errorf("sluice_discovery_error = %v after a failure, want 1", v)
	}
	if v := m.value("sluice_topology_changes_total", "cluster", "main"); v != 2 {
		t.Errorf("sluice_topology_changes_total = %v after two snapshots, want 2", v)
	}

	// A replica that leaves takes its lag with it.
	sink.Publish(topology.Snapshot{Writer: &writer})
	m = e.scrape(t)
	if n := len(m.series("sluice_replica_lag_bytes", "cluster", "main")); n != 0 {
		t.Errorf("%d lag series for a cluster with no replica", n)
	}
	if v := m.value("sluice_replicas", "cluster", "main"); v != 0 {
		t.Errorf("sluice_replicas = %v, want 0", v)
	}
}

// Go's profiles are served on the admin listener only when admin.pprof
// says so.
func TestAdminPprof(t *testing.T) {
	off := newEnv(t, envOptions{admin: adminOn})
	if code, _ := off.admin(t, "/debug/pprof/heap?debug=1"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/heap without admin.pprof: %d, want 404", code)
	}
	on := newEnv(t, envOptions{admin: adminOn + "\n  pprof = true"})
	code, body := on.admin(t, "/debug/pprof/heap?debug=1&gc=1")
	if code != http.StatusOK || !strings.Contains(body, "# HeapAlloc = ") {
		t.Fatalf("/debug/pprof/heap with admin.pprof: %d\n%.300s", code, body)
	}
	if code, _ := on.admin(t, "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics beside the profiles: %d", code)
	}
}
