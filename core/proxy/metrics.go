package proxy

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/topology"
)

// The label sets of Sluice's metrics. Every metric is listed with its
// meaning in README.md ("Admin endpoints and metrics").
var (
	listenerLabels = []string{"cluster", "role"}                     // a listener's cluster and default role
	poolLabels     = []string{"cluster", "role", "database", "user"} // a pool's, without the server address
)

// with returns labels followed by more, in a new slice.
func with(labels []string, more ...string) []string { return slices.Concat(labels, more) }

// Histogram buckets, in seconds.
var (
	waitBuckets     = []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30}
	responseBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	recoveryBuckets = []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// The reasons a client connection is rejected before a session serves it,
// besides the engine's LoginFailure values.
const (
	rejectBadStartup   = string(engine.LoginBadStartup)
	rejectTLSHandshake = "tls_handshake"
	rejectTLSRequired  = "tls_required"
	rejectShutdown     = string(engine.LoginShuttingDown)
)

// The outcomes of a cancel request.
var cancelOutcomes = []string{"forwarded", "idle", "no_session", "failed"}

// metrics are one Proxy's Prometheus metrics, in a registry of its own (so
// that many proxies can live in one process). Counters and histograms
// that move on the hot path are resolved to their label values once per
// pool or connection; gauges that describe state are read at scrape time
// by stateCollector. It is safe for concurrent use.
//
// To add a metric family: a field here, one line in newMetrics that
// makes and registers it, and the place that moves it.
type metrics struct {
	reg *prometheus.Registry

	clientConns    *prometheus.GaugeVec   // listenerLabels
	clientAccepted *prometheus.CounterVec // listenerLabels
	clientRejected *prometheus.CounterVec // listenerLabels, reason

	serverOpened   *prometheus.CounterVec   // poolLabels
	serverClosed   *prometheus.CounterVec   // poolLabels, reason
	connectErrors  *prometheus.CounterVec   // poolLabels
	borrowWait     *prometheus.HistogramVec // poolLabels
	borrowTimeouts *prometheus.CounterVec   // poolLabels, reason
	queries        *prometheus.CounterVec   // poolLabels
	transactions   *prometheus.CounterVec   // poolLabels
	serverResponse *prometheus.HistogramVec // poolLabels

	cancels *prometheus.CounterVec // outcome
	reloads *prometheus.CounterVec // result

	failovers      *prometheus.CounterVec   // cluster
	writerRecovery *prometheus.HistogramVec // cluster

	writers writerWatch
}

// newMetrics makes the metrics of p and registers them, with the Go
// runtime's and the process's, in a new registry.
func newMetrics(p *Proxy) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.writers.clusters = make(map[string]*writerState)
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_" + name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_" + name, Help: help, Buckets: buckets}, labels)
		m.reg.MustRegister(h)
		return h
	}
	m.clientConns = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_client_connections",
		Help: "Client connections open now, from accept to close (including those still in startup or authentication)."}, listenerLabels)
	m.reg.MustRegister(m.clientConns)
	m.clientAccepted = counter("client_connections_accepted_total", "Client connections accepted.", listenerLabels...)
	m.clientRejected = counter("client_connections_rejected_total", "Client connections Sluice refused before serving them, by reason.", with(listenerLabels, "reason")...)

	m.serverOpened = counter("server_connections_opened_total", "Server connections opened (dialled and authenticated).", poolLabels...)
	m.serverClosed = counter("server_connections_closed_total", "Server connections closed, by reason.", with(poolLabels, "reason")...)
	m.connectErrors = counter("server_connect_errors_total", "Server connections that could not be opened.", poolLabels...)
	m.borrowWait = histogram("borrow_wait_seconds", "Time a borrow of a server connection spent in its pool: taking an idle one, dialling one, or waiting in line.", waitBuckets, poolLabels...)
	m.borrowTimeouts = counter("borrow_timeouts_total", "Borrows that gave up after borrow_timeout: pool_full (every connection lent), no_server (no writer or usable replica known).", with(poolLabels, "reason")...)
	m.queries = counter("queries_total", "Client requests the server answered with a ReadyForQuery: a simple Query, or an extended-protocol batch up to its Sync.", poolLabels...)
	m.transactions = counter("transactions_total", "Client requests whose ReadyForQuery left the server connection outside a transaction block: implicit transactions, and the COMMIT or ROLLBACK of explicit ones.", poolLabels...)
	m.serverResponse = histogram("server_response_seconds", "Time from forwarding the first message of a client request to the server until reading the ReadyForQuery that ends it (for a pipeline, from the previous one).", responseBuckets, poolLabels...)

	m.cancels = counter("cancel_requests_total", "Cancel requests from clients, by outcome: forwarded, idle (the session held no server connection), no_session (no session has that key), failed (the server could not be reached).", "outcome")
	m.reloads = counter("config_reloads_total", "Configuration reloads, by result: ok or failed.", "result")

	m.failovers = counter("failovers_total", "Times a cluster's writer changed address, or came back after none was known.", "cluster")
	m.writerRecovery = histogram("writer_recovery_seconds", "Time from losing a cluster's writer (or its change of address) to the first writer borrow that succeeded after it.", recoveryBuckets, "cluster")

	for _, o := range cancelOutcomes {
		m.cancels.WithLabelValues(o)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("failed")

	// Read-your-writes borrows, read from the proxy's counters at scrape.
	for _, c := range []struct {
		name, help string
		get        func(ReadYourWritesStats) uint64
	}{
		{"read_your_writes_fresh_total", "Replica borrows with a read-your-writes position that found a replica known to be past it at once.", func(s ReadYourWritesStats) uint64 { return s.Fresh }},
		{"read_your_writes_waits_total", "Replica borrows that waited (polling, up to read_your_writes_wait) for a replica to replay past the client's position.", func(s ReadYourWritesStats) uint64 { return s.Waits }},
		{"read_your_writes_fallbacks_total", "Replica borrows that went to the writer because no replica replayed past the client's position within read_your_writes_wait.", func(s ReadYourWritesStats) uint64 { return s.Fallbacks }},
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_" + c.name, Help: c.help},
			func() float64 { return float64(c.get(p.ReadYourWritesStats())) }))
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newStateCollector(p))
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// clientConn counts one accepted client connection, under the labels of
// its listener at the moment it was accepted.
type clientConn struct {
	m      *metrics
	labels [2]string
	open   prometheus.Gauge
}

// accepted counts a client connection accepted by l. The caller must call
// closed when it ends.
func (m *metrics) accepted(l *listener) clientConn {
	c := clientConn{m: m, labels: [2]string{l.cluster, l.role.String()}}
	m.clientAccepted.WithLabelValues(c.labels[:]...).Inc()
	c.open = m.clientConns.WithLabelValues(c.labels[:]...)
	c.open.Inc()
	return c
}

// rejected counts the connection as refused for reason.
func (c clientConn) rejected(reason string) {
	c.m.clientRejected.WithLabelValues(c.labels[0], c.labels[1], reason).Inc()
}

// closed counts the connection's end.
func (c clientConn) closed() { c.open.Dec() }

// poolObserver is the pool.Observer of one pool: its metrics, resolved to
// the pool's labels.
type poolObserver struct {
	opened, connectErrors, timeouts, queries, transactions prometheus.Counter
	closed                                                 []prometheus.Counter // by pool.CloseReason
	wait, response                                         prometheus.Observer
}

var _ pool.Observer = (*poolObserver)(nil)

// poolObserver returns the Observer of the pool of an endpoint with role,
// for a backend user and database.
func (m *metrics) poolObserver(cluster string, role topology.Role, database, user string) *poolObserver {
	l := []string{cluster, role.String(), database, user}
	o := &poolObserver{
		opened:        m.serverOpened.WithLabelValues(l...),
		connectErrors: m.connectErrors.WithLabelValues(l...),
		timeouts:      m.borrowTimeouts.WithLabelValues(with(l, "pool_full")...),
		queries:       m.queries.WithLabelValues(l...),
		transactions:  m.transactions.WithLabelValues(l...),
		wait:          m.borrowWait.WithLabelValues(l...),
		response:      m.serverResponse.WithLabelValues(l...),
	}
	for _, why := range pool.CloseReasons() {
		o.closed = append(o.closed, m.serverClosed.WithLabelValues(with(l, why.String())...))
	}
	return o
}

func (o *poolObserver) Opened()                   { o.opened.Inc() }
func (o *poolObserver) DialFailed()               { o.connectErrors.Inc() }
func (o *poolObserver) Closed(r pool.CloseReason) { o.closed[r].Inc() }
func (o *poolObserver) Waited(d time.Duration)    { o.wait.Observe(d.Seconds()) }
func (o *poolObserver) TimedOut()                 { o.timeouts.Inc() }

func (o *poolObserver) Served(took time.Duration, txEnd bool) {
	o.queries.Inc()
	if txEnd {
		o.transactions.Inc()
	}
	if took >= 0 {
		o.response.Observe(took.Seconds())
	}
}

// noServer counts a borrow that timed out because no endpoint for role
// was known.
func (m *metrics) noServer(cluster string, role session.Role, database, user string) {
	m.borrowTimeouts.WithLabelValues(cluster, role.String(), database, user, "no_server").Inc()
}

// cancelled counts a cancel request with the error of Session.Cancel, or
// with no session found.
func (m *metrics) cancelled(found bool, err error) {
	outcome := "forwarded"
	switch {
	case !found:
		outcome = "no_session"
	case errors.Is(err, engine.ErrNothingToCancel):
		outcome = "idle"
	case err != nil:
		outcome = "failed"
	}
	m.cancels.WithLabelValues(outcome).Inc()
}

// reloaded counts a reload.
func (m *metrics) reloaded(err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// writerWatch follows each cluster's writer to count failovers and time
// how long writes could not be served.
type writerWatch struct {
	mu       sync.Mutex
	clusters map[string]*writerState
	// awaiting counts the clusters waiting for their first write after a
	// failover, so that a borrow costs one atomic load when there is none.
	awaiting atomic.Int32
}

// writerState is what writerWatch knows of one cluster.
type writerState struct {
	addr    string    // the writer last known; "" before the first
	known   bool      // a writer is known now
	lostAt  time.Time // when the writer was lost; zero when no loss is pending
	waiting bool      // a writer is known again since lostAt; its first write is awaited
}

// noteTopology follows a cluster's writer through a new snapshot (nil
// before the first).
func (m *metrics) noteTopology(cluster string, snap *topology.Snapshot) {
	if snap == nil {
		return
	}
	now := time.Now()
	ww := &m.writers
	ww.mu.Lock()
	defer ww.mu.Unlock()
	w := ww.clusters[cluster]
	if w == nil {
		w = &writerState{}
		ww.clusters[cluster] = w
	}
	writer := snap.UsableWriter()
	switch {
	case writer == nil:
		if w.known && w.lostAt.IsZero() {
			w.lostAt = now
		}
		w.known = false
		if w.waiting {
			// Lost again before anything was written: the outage goes on.
			w.waiting = false
			ww.awaiting.Add(-1)
		}
		return
	case w.addr == "":
		// The first writer known: not a failover.
	case !w.known || writer.Addr != w.addr:
		m.failovers.WithLabelValues(cluster).Inc()
		if w.lostAt.IsZero() {
			w.lostAt = now
		}
		if !w.waiting {
			w.waiting = true
			ww.awaiting.Add(1)
		}
	}
	w.addr, w.known = writer.Addr, true
}

// noteBorrow notes a borrow's outcome: the first writer borrow that
// succeeds after a failover ends the time writes could not be served.
func (m *metrics) noteBorrow(cluster string, role session.Role, err error) {
	ww := &m.writers
	if err != nil || role != session.RoleWriter || ww.awaiting.Load() == 0 {
		return
	}
	ww.mu.Lock()
	defer ww.mu.Unlock()
	w := ww.clusters[cluster]
	if w == nil || !w.waiting {
		return
	}
	m.writerRecovery.WithLabelValues(cluster).Observe(time.Since(w.lostAt).Seconds())
	w.waiting, w.lostAt = false, time.Time{}
	ww.awaiting.Add(-1)
}
