// Package proxy runs Sluice: it listens for PostgreSQL clients, negotiates
// TLS and the startup packet, answers cancel requests, runs a session per
// client against the pools it owns, serves the admin HTTP endpoint, and
// reloads or shuts down on request. A Go program can embed it:
//
//	p, err := proxy.New(cfg, logger)
//	...
//	err = p.Serve(ctx) // until ctx ends, then a graceful shutdown
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/topology"
	"github.com/sluicedb/sluice/core/wire"
)

// startupTimeout bounds the startup packet, TLS handshake and
// authentication of a client, as PostgreSQL's authentication_timeout.
const startupTimeout = 60 * time.Second

// state is the part of the proxy a reload replaces as a whole.
type state struct {
	cfg     *config.Config
	users   map[string]*engine.User
	tls     map[string]*tls.Config // by listener name
	session *session.Config        // what every session machine shares ...
	// ... but for what a listener changes (split's policy, the recording of
	// commit positions for read_your_writes): by listener name.
	sessions map[string]*session.Config
	servers  map[string]pool.TLS // TLS towards each cluster's servers, by cluster name
	// envs are the sessions' environments, one per listener (envKey),
	// shared by its sessions: an idle client does not keep closures of
	// its own.
	envs sync.Map
}

// envKey names a listener's environment in state.envs.
type envKey struct {
	listener, cluster string
	role              session.Role
}

// Proxy is a running Sluice. It is safe for concurrent use. The owner must
// call Close (or let Serve return) to release its listeners and
// connections.
type Proxy struct {
	log   *zap.Logger
	state atomic.Pointer[state]

	startupTimeout time.Duration // bounds startup and authentication of a client

	listeners []*listener
	admin     *http.Server
	adminLn   net.Listener

	mu       sync.Mutex
	pools    map[poolKey]*pool.Pool
	sessions map[session.Key]*engine.Session // by the BackendKeyData given to the client
	closed   bool

	pinMu     sync.Mutex
	pinCounts map[string]uint64

	metrics *metrics

	topo topologies
	ryw  readYourWrites

	nextID    atomic.Uint64
	conns     sync.WaitGroup // sessions and cancel handlers
	loops     sync.WaitGroup // accept loops and the sweeper
	stop      chan struct{}
	closeOnce sync.Once
	hooks     []Hook
	starter   SessionStarter
	hooksOnce sync.Once
	evloops   *eventLoops     // the loop engine's; nil under the goroutine engine
	noWait    context.Context // already done: poolFor without waiting
}

type listener struct {
	name    string
	cluster string
	role    session.Role // the default role of its transactions
	ln      net.Listener
}

type poolKey struct {
	cluster, addr  string
	role           topology.Role
	readOnly       bool // the writer's pool for reader transactions that fall back to it
	database, user string
}

// New validates cfg, resolves its secrets and binds its listeners, so that
// Addr is known when it returns. Nothing is served until Serve.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) (*Proxy, error) {
	st, err := newState(cfg)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		log:       log,
		pools:     make(map[poolKey]*pool.Pool),
		sessions:  make(map[session.Key]*engine.Session),
		pinCounts: make(map[string]uint64),
		stop:      make(chan struct{}),

		startupTimeout: startupTimeout,
	}
	p.metrics = newMetrics(p)
	noWait, cancelNoWait := context.WithCancel(context.Background())
	cancelNoWait()
	p.noWait = noWait
	p.state.Store(st)
	for _, o := range opts {
		o(p)
	}
	if cfg.Engine == config.EngineLoop {
		if p.evloops, err = startLoops(cfg.EventLoops, log); err != nil {
			return nil, err
		}
	}
	for _, lc := range cfg.Listeners {
		ln, err := net.Listen("tcp", lc.Address)
		if err != nil {
			p.closeListeners()
			if p.evloops != nil {
				p.evloops.Close()
			}
			return nil, fmt.Errorf("listen %q: %w", lc.Name, err)
		}
		p.listeners = append(p.listeners, &listener{name: lc.Name, cluster: lc.Cluster, role: roleOf(lc), ln: ln})
	}
	p.startTopology(cfg)
	if cfg.Admin.Address != "" {
		ln, err := net.Listen("tcp", cfg.Admin.Address)
		if err != nil {
			p.closeListeners()
			return nil, fmt.Errorf("admin: %w", err)
		}
		p.adminLn = ln
		p.admin = &http.Server{Handler: p.adminHandler(cfg.Admin.Pprof), ReadHeaderTimeout: 10 * time.Second}
	}
	return p, nil
}

// newState resolves the users' secrets and loads the TLS certificates of
// the listeners and the CA certificates of the clusters.
func newState(cfg *config.Config) (*state, error) {
	st := &state{cfg: cfg, users: make(map[string]*engine.User), tls: make(map[string]*tls.Config)}
	sc := &session.Config{
		Mode:              session.ModeTransaction,
		Track:             make(map[string]bool, len(cfg.Pinning.Track)),
		OnSetPin:          cfg.Pinning.OnSet == config.OnSetPin,
		MaxPrepared:       cfg.Pinning.MaxPreparedStatements,
		MaxClientPrepared: cfg.Pinning.MaxClientPreparedStatements,
	}
	if cfg.Pool.Mode == config.ModeSession {
		sc.Mode = session.ModeSession
	}
	for _, name := range cfg.Pinning.Track {
		sc.Track[name] = true
	}
	st.session = sc
	st.sessions = make(map[string]*session.Config, len(cfg.Listeners))
	for _, lc := range cfg.Listeners {
		lsc := *sc
		if lc.Role == config.RoleSplit {
			lsc.Policy = session.SplitPolicy{}
		}
		lsc.RecordLSN = cfg.Clusters[lc.Cluster].ReadYourWrites && sc.Mode == session.ModeTransaction
		st.sessions[lc.Name] = &lsc
	}
	method := auth.Method(cfg.Auth.Method)
	for name, u := range cfg.Auth.Users {
		su := &engine.User{BackendUser: u.BackendUser}
		if su.BackendUser == "" {
			su.BackendUser = name
		}
		if u.Password != "" {
			raw, err := auth.ResolveReference(u.Password, os.Getenv)
			if err != nil {
				return nil, fmt.Errorf("auth.user %q.password: %w", name, err)
			}
			sec, err := auth.ParseSecret(raw)
			if err != nil {
				return nil, fmt.Errorf("auth.user %q.password: %w", name, err)
			}
			if !sec.Supports(method) {
				return nil, fmt.Errorf("auth.user %q.password: this form of secret cannot be used with method %q", name, method)
			}
			su.Secret = &sec
		}
		if u.BackendPassword != "" {
			pw, err := auth.ResolveReference(u.BackendPassword, os.Getenv)
			if err != nil {
				return nil, fmt.Errorf("auth.user %q.backend_password: %w", name, err)
			}
			su.BackendPassword = pw
		}
		st.users[name] = su
	}
	for _, lc := range cfg.Listeners {
		if lc.TLS == nil {
			continue
		}
		cert, err := tls.LoadX509KeyPair(lc.TLS.CertFile, lc.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("listen %q.tls: %w", lc.Name, err)
		}
		st.tls[lc.Name] = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	servers, err := loadClusterTLS(cfg.Clusters)
	if err != nil {
		return nil, err
	}
	st.servers = servers
	return st, nil
}

// sessionConfig returns what the machines of a listener's sessions share.
func (st *state) sessionConfig(listener string) *session.Config {
	if sc, ok := st.sessions[listener]; ok {
		return sc
	}
	return st.session
}

// Addr returns the address of the named listener, or nil.
func (p *Proxy) Addr(name string) net.Addr {
	for _, l := range p.listeners {
		if l.name == name {
			return l.ln.Addr()
		}
	}
	return nil
}

// AdminAddr returns the admin HTTP listener's address, or nil.
func (p *Proxy) AdminAddr() net.Addr {
	if p.adminLn == nil {
		return nil
	}
	return p.adminLn.Addr()
}

// Serve accepts clients until ctx ends or Close is called. When ctx ends it
// shuts down gracefully: it stops accepting, lets transactions finish for
// up to shutdown_timeout, then closes everything. Serve returns nil after a
// shutdown.
func (p *Proxy) Serve(ctx context.Context) error {
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, l := range p.listeners {
		p.loops.Add(1)
		go p.acceptLoop(sctx, l)
	}
	if p.admin != nil {
		p.loops.Add(1)
		go func() {
			defer p.loops.Done()
			if err := p.admin.Serve(p.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.log.Error("admin listener failed", zap.Error(err))
			}
		}()
	}
	p.loops.Add(1)
	go p.sweep()
	p.log.Info("sluice serving", zap.Int("listeners", len(p.listeners)))
	p.startHooks()

	select {
	case <-ctx.Done():
	case <-p.stop:
	}
	timeout := p.state.Load().cfg.ShutdownTimeout
	sd, cancelSD := context.WithTimeout(context.Background(), timeout)
	defer cancelSD()
	p.Shutdown(sd)
	return nil
}

func (p *Proxy) acceptLoop(ctx context.Context, l *listener) {
	defer p.loops.Done()
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept failed", zap.String("listener", l.name), zap.Error(err))
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-p.stop:
				return
			}
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		p.conns.Add(1)
		p.mu.Unlock()
		go p.handle(ctx, l, nc, p.conns.Done)
	}
}

// Shutdown stops accepting clients, ends idle sessions at once and the
// others at the end of their transaction, and waits for them until ctx
// ends; then it closes whatever remains. It is idempotent.
func (p *Proxy) Shutdown(ctx context.Context) {
	p.stopHooks() // deregister first: the fleet stops sending clients here
	p.closeListeners()
	bye := wire.Fatalf(wire.CodeAdminShutdown, "terminating connection due to administrator command")
	p.mu.Lock()
	p.closed = true
	list := make([]*engine.Session, 0, len(p.sessions))
	for _, s := range p.sessions {
		list = append(list, s)
	}
	p.mu.Unlock()
	for _, s := range list {
		s.Kill(bye)
	}
	done := make(chan struct{})
	go func() { p.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.log.Warn("shutdown timeout reached; closing remaining sessions")
	}
	p.Close()
}

// Close closes listeners, sessions and pools at once. It is idempotent and
// waits for every goroutine the proxy started.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.stopHooks()
		close(p.stop)
		p.closeListeners()
		if p.admin != nil {
			p.admin.Close()
		}
		p.mu.Lock()
		p.closed = true
		list := make([]*engine.Session, 0, len(p.sessions))
		for _, s := range p.sessions {
			list = append(list, s)
		}
		p.mu.Unlock()
		for _, s := range list {
			s.Close()
		}
		p.conns.Wait()
		if p.evloops != nil {
			p.evloops.Close()
		}
		p.stopTopology()
		p.loops.Wait()
		p.mu.Lock()
		for _, pl := range p.pools {
			pl.Close()
		}
		p.mu.Unlock()
	})
	return nil
}

func (p *Proxy) closeListeners() {
	for _, l := range p.listeners {
		l.ln.Close()
	}
}

// Reload replaces the configuration: pool limits and timeouts, users,
// authentication and TLS settings take effect without dropping a client;
// sessions keep the pool they have. Listener addresses cannot change
// without a restart. An invalid configuration is rejected and the old one
// stays. Every call is counted in sluice_config_reloads_total.
func (p *Proxy) Reload(cfg *config.Config) error {
	err := p.reload(cfg)
	p.metrics.reloaded(err)
	return err
}

// ReloadFailed counts a reload that failed before Reload could be called,
// such as a configuration file that no longer parses, so that
// sluice_config_reloads_total counts every attempt.
func (p *Proxy) ReloadFailed() { p.metrics.reloaded(errReloadFailed) }

// errReloadFailed stands for a reload that failed before Reload.
var errReloadFailed = errors.New("reload failed")

func (p *Proxy) reload(cfg *config.Config) error {
	old := p.state.Load().cfg
	if len(cfg.Listeners) != len(old.Listeners) {
		return errors.New("reload: listeners cannot be added or removed without a restart")
	}
	for i, l := range cfg.Listeners {
		if l.Name != old.Listeners[i].Name || l.Address != old.Listeners[i].Address {
			return fmt.Errorf("reload: listen %q: address and name cannot change without a restart", l.Name)
		}
	}
	st, err := newState(cfg)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	for _, h := range p.hooks {
		if r, ok := h.(Reloader); ok {
			if err := r.Reload(cfg); err != nil {
				return fmt.Errorf("reload: %w", err)
			}
		}
	}
	p.state.Store(st)
	p.mu.Lock()
	for k, pl := range p.pools {
		role := k.role
		if k.readOnly {
			role = topology.Replica
		}
		pl.SetSettings(poolSettings(cfg, role))
	}
	p.mu.Unlock()
	for i, l := range cfg.Listeners {
		p.listeners[i].cluster = l.Cluster
		p.listeners[i].role = roleOf(l)
	}
	p.reloadTopology(old, cfg)
	p.log.Info("configuration reloaded", zap.Int("max_connections", cfg.Pool.MaxConnections))
	return nil
}

// poolSettings returns the settings of the pools of endpoints with role:
// a replica's have their own limits when pool.replica sets them.
func poolSettings(cfg *config.Config, role topology.Role) pool.Settings {
	maxConns, maxIdle := cfg.Pool.MaxConnections, cfg.Pool.MaxIdleConnections
	if role == topology.Replica && cfg.Pool.ReplicaMaxConnections > 0 {
		maxConns, maxIdle = cfg.Pool.ReplicaMaxConnections, cfg.Pool.ReplicaMaxIdleConnections
	}
	return pool.Settings{
		MaxConnections:     maxConns,
		MaxIdleConnections: maxIdle,
		BorrowTimeout:      cfg.Pool.BorrowTimeout,
		IdleTimeout:        cfg.Pool.ServerIdleTimeout,
		Lifetime:           cfg.Pool.ServerLifetime,
	}
}

// newKey returns a BackendKeyData no session has.
func (p *Proxy) newKey() session.Key {
	var b [8]byte
	for {
		rand.Read(b[:])
		k := session.Key{ProcessID: binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, SecretKey: binary.BigEndian.Uint32(b[4:])}
		if k.ProcessID == 0 {
			continue
		}
		p.mu.Lock()
		_, taken := p.sessions[k]
		p.mu.Unlock()
		if !taken {
			return k
		}
	}
}

// rekey files a session under the key it gave its client after login.
func (p *Proxy) rekey(s *engine.Session, old, key session.Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sessions[old] == s {
		delete(p.sessions, old)
	}
	p.sessions[key] = s
}

// cancel forwards a client's CancelRequest to the session it names, if
// both its process ID and secret match; anything else is dropped silently,
// as PostgreSQL does.
func (p *Proxy) cancel(ctx context.Context, pid, secret uint32) {
	p.mu.Lock()
	s := p.sessions[session.Key{ProcessID: pid, SecretKey: secret}]
	p.mu.Unlock()
	if s == nil {
		p.log.Debug("cancel request for no session ignored")
		p.metrics.cancelled(false, nil)
		return
	}
	p.metrics.cancelled(true, s.Cancel(ctx))
}

// sweep reaps idle server connections and ends clients idle longer than
// idle_client_timeout.
func (p *Proxy) sweep() {
	defer p.loops.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	idleErr := wire.Fatalf(wire.CodeIdleSessionTimeout, "terminating connection due to idle-session timeout")
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			timeout := p.state.Load().cfg.Pool.IdleClientTimeout
			p.mu.Lock()
			pools := make([]*pool.Pool, 0, len(p.pools))
			for _, pl := range p.pools {
				pools = append(pools, pl)
			}
			var idle []*engine.Session
			if timeout > 0 {
				for _, s := range p.sessions {
					if since, free := s.IdleSince(); free && now.Sub(since) > timeout {
						idle = append(idle, s)
					}
				}
			}
			p.mu.Unlock()
			for _, pl := range pools {
				pl.Reap(now)
			}
			for _, s := range idle {
				s.Kill(idleErr)
			}
		}
	}
}

// SessionInfo describes one client session, for the admin API and tests.
type SessionInfo struct {
	ID        uint64   `json:"id"`
	ProcessID uint32   `json:"process_id"` // the BackendKeyData process ID the client was given
	User      string   `json:"user"`
	Database  string   `json:"database"`
	Pinned    []string `json:"pinned,omitempty"` // why the session keeps its server connection, sorted
	Holds     bool     `json:"holds_server"`     // whether it holds a server connection now
}

// Sessions returns a snapshot of the connected client sessions.
func (p *Proxy) Sessions() []SessionInfo {
	p.mu.Lock()
	list := make([]*engine.Session, 0, len(p.sessions))
	for _, s := range p.sessions {
		list = append(list, s)
	}
	p.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		in := s.Info()
		out = append(out, SessionInfo{ID: s.ID(), ProcessID: s.Key().ProcessID, User: in.User, Database: in.Database, Pinned: in.Pinned, Holds: in.Holds})
	}
	return out
}

// PinCounts returns how many sessions each pin reason has pinned since the
// proxy started.
func (p *Proxy) PinCounts() map[string]uint64 {
	p.pinMu.Lock()
	defer p.pinMu.Unlock()
	out := make(map[string]uint64, len(p.pinCounts))
	for k, v := range p.pinCounts {
		out[k] = v
	}
	return out
}

// countPin records that a session was pinned for reason.
func (p *Proxy) countPin(reason string) {
	p.pinMu.Lock()
	p.pinCounts[reason]++
	p.pinMu.Unlock()
}
