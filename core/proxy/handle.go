package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
)

// handle serves one accepted connection: TLS and startup negotiation, then
// a cancel request or a session. It calls done when the connection has
// ended, which for a session handed to an event loop is after handle
// returns.
func (p *Proxy) handle(ctx context.Context, l *listener, nc net.Conn, done func()) {
	cc := p.metrics.accepted(l)
	ended := func() {
		cc.closed()
		done()
	}
	handedOff := false
	defer func() {
		if !handedOff {
			ended()
		}
	}()
	st0 := p.state.Load()
	var lc config.Listener
	for _, c := range st0.cfg.Listeners {
		if c.Name == l.name {
			lc = c
		}
	}
	nc.SetDeadline(time.Now().Add(p.startupTimeout))
	conn, startup, err := p.negotiate(nc, st0.tls[l.name])
	if err != nil {
		p.log.Debug("startup failed", zap.String("client", nc.RemoteAddr().String()), zap.Error(err))
		if we, ok := err.(*wire.Error); ok {
			conn.Write(we.Encode(nil))
			cc.rejected(rejectBadStartup)
		} else if errors.Is(err, errTLSHandshake) {
			cc.rejected(rejectTLSHandshake)
		}
		conn.Close()
		return
	}
	if startup.Kind == wire.KindCancel {
		conn.Close()
		p.cancel(ctx, startup.ProcessID, startup.SecretKey)
		return
	}
	if _, isTLS := conn.(*tls.Conn); lc.RequireTLS && !isTLS {
		we := wire.Fatalf(wire.CodeInvalidAuthorization, "sluice requires TLS: connect with sslmode=require or stronger")
		conn.Write(we.Encode(nil))
		conn.Close()
		cc.rejected(rejectTLSRequired)
		return
	}

	key := p.newKey()
	s := engine.New(p.nextID.Add(1), conn, startup, key, p.listenerEnv(st0, l.name, l.cluster, l.role), p.log)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn.Write(wire.Fatalf(wire.CodeCannotConnectNow, "the proxy is shutting down").Encode(nil))
		conn.Close()
		cc.rejected(rejectShutdown)
		return
	}
	p.sessions[key] = s
	p.mu.Unlock()
	handedOff = true // s.OnEnd ends it
	s.OnEnd(func() {
		p.mu.Lock()
		k := s.Key()
		if p.sessions[k] == s {
			delete(p.sessions, k)
		}
		if p.sessions[key] == s {
			delete(p.sessions, key)
		}
		p.mu.Unlock()
		if why := s.LoginFailure(); why != "" {
			cc.rejected(string(why))
		}
		ended()
	})
	s.Serve(ctx)
}

// listenerEnv returns the environment the sessions of a listener share
// under st, made on first use.
func (p *Proxy) listenerEnv(st *state, listener, cluster string, role session.Role) *engine.Env {
	k := envKey{listener, cluster, role}
	if env, ok := st.envs.Load(k); ok {
		return env.(*engine.Env)
	}
	env, _ := st.envs.LoadOrStore(k, p.sessionEnv(st, listener, cluster, role))
	return env.(*engine.Env)
}

// sessionEnv is what a session of a listener (its name, cluster and
// default role) needs, under the configuration st.
func (p *Proxy) sessionEnv(st *state, listener, cluster string, role session.Role) *engine.Env {
	// resolve fills in a route's defaults: the listener's cluster and role.
	resolve := func(r session.Route) session.Route {
		if r.Cluster == "" {
			r.Cluster = cluster
		}
		if r.Role == session.RoleDefault {
			r.Role = role
		}
		return r
	}
	var loops engine.Loops
	if p.evloops != nil && plaintextServers(st.cfg) {
		loops = p.evloops
	}
	return &engine.Env{
		Loops:      loops,
		Session:    st.sessionConfig(listener),
		AuthMethod: auth.Method(st.cfg.Auth.Method),
		LookupUser: func(name string) *engine.User { return p.state.Load().users[name] },
		Pool: func(ctx context.Context, u *engine.User, database string, r session.Route) (*pool.Pool, error) {
			r = resolve(r)
			return p.poolFor(ctx, r.Cluster, r.Role, u, database)
		},
		Borrow: func(ctx context.Context, u *engine.User, database string, r session.Route) (*pool.Conn, error) {
			r = resolve(r)
			if r.MinLSN != 0 && r.Role == session.RoleReplica {
				return p.borrowAfter(ctx, r.Cluster, r.MinLSN, u, database) // read-your-writes
			}
			return p.borrow(ctx, r.Cluster, r.Role, u, database)
		},
		BorrowFunc: func(u *engine.User, database string, r session.Route, owner any, now time.Time, memo *engine.PoolMemo, fn func(*pool.Conn, error)) (*pool.Conn, bool) {
			r = resolve(r)
			if r.MinLSN != 0 && r.Role == session.RoleReplica {
				return nil, false // read-your-writes chooses with a query
			}
			pl := p.memoPool(memo, r, u, database)
			if pl == nil {
				return nil, false
			}
			c, queued := pl.BorrowFunc(owner, now, fn)
			if c != nil {
				p.metrics.noteBorrow(r.Cluster, r.Role, nil)
			}
			return c, queued
		},
		CountPin:                 p.countPin,
		Rekey:                    p.rekey,
		StartSession:             p.startSession(listener, st.sessionConfig(listener).Policy),
		IdleInTransactionTimeout: st.cfg.Pool.IdleInTransactionTimeout,
		QueryTimeout:             st.cfg.Pool.QueryTimeout,
	}
}

// errTLSHandshake wraps a failed TLS handshake with a client.
var errTLSHandshake = errors.New("TLS handshake failed")

// negotiate reads startup packets until a StartupMessage or CancelRequest,
// answering SSLRequest (with a TLS handshake when the listener has TLS)
// and GSSENCRequest ('N': Sluice does not do GSSAPI encryption).
func (p *Proxy) negotiate(nc net.Conn, tc *tls.Config) (net.Conn, *wire.Startup, error) {
	conn := nc
	for i := 0; i < 3; i++ {
		st, err := wire.ReadStartup(conn)
		if err != nil {
			return conn, nil, wire.Fatalf(wire.CodeProtocolViolation, "invalid startup packet").Wrap(err)
		}
		switch st.Kind {
		case wire.KindStartup, wire.KindCancel:
			return conn, st, nil
		case wire.KindGSSENCRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return conn, nil, err
			}
		case wire.KindSSLRequest:
			if _, isTLS := conn.(*tls.Conn); isTLS || tc == nil {
				if isTLS {
					return conn, nil, wire.Fatalf(wire.CodeProtocolViolation, "SSLRequest inside TLS")
				}
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return conn, nil, err
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return conn, nil, err
			}
			// ReadStartup consumed nothing beyond the request, so any
			// plaintext a client sent early goes to the handshake and fails it.
			tlsConn := engine.TLSServer(nc, tc) // an event loop can take it over after the login
			if err := tlsConn.Handshake(); err != nil {
				return nc, nil, fmt.Errorf("%w: %w", errTLSHandshake, err)
			}
			conn = tlsConn
		}
	}
	return conn, nil, wire.Fatalf(wire.CodeProtocolViolation, "too many startup negotiation packets")
}

// plaintextServers reports whether some cluster may reach PostgreSQL in
// plaintext (tls.mode disable, or prefer against a server without TLS):
// only then is an event loop worth a session's move. A session on a loop
// that is lent a TLS connection leaves it for a goroutine of its own,
// since a TLS stream needs the goroutine engine.
func plaintextServers(cfg *config.Config) bool {
	for _, cl := range cfg.Clusters {
		switch cl.TLS.Mode {
		case "", config.ServerTLSDisable, config.ServerTLSPrefer:
			return true
		}
	}
	return len(cfg.Clusters) == 0
}
