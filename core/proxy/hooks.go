package proxy

import (
	"io"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/session"
)

// Hook runs beside a proxy: Start when it begins serving (its listeners
// and admin endpoint are up), Stop when it begins to shut down, before it
// stops accepting clients. Discovery's self-registration in Consul is one.
// Start must not block; a hook that needs to retry does so in its own
// goroutine until Stop.
type Hook interface {
	Start(p *Proxy) error
	Stop()
}

// WithHook adds a hook.
func WithHook(h Hook) Option {
	return func(p *Proxy) { p.hooks = append(p.hooks, h) }
}

// Reloader is a Hook that takes part in Reload: it is given the new
// configuration once the proxy has validated it and before the proxy
// switches to it. An error rejects the whole reload, so a Reloader must
// change nothing when it fails (the filters load a new chain completely
// before they swap it in).
type Reloader interface {
	Reload(cfg *config.Config) error
}

// WithCollector adds c's metrics to the proxy's /metrics.
func WithCollector(c prometheus.Collector) Option {
	return func(p *Proxy) { p.metrics.reg.MustRegister(c) }
}

// SessionStarter is asked once per authenticated client of a listener
// (the WebAssembly filters' session-start hook is one): an error refuses
// the session, a Policy decides its statements (and is closed at its end
// when it implements io.Closer). Core never imports what implements it.
type SessionStarter func(listener string, a engine.SessionAttrs) (session.Policy, error)

// WithSessionStarter makes f the proxy's SessionStarter.
func WithSessionStarter(f SessionStarter) Option {
	return func(p *Proxy) { p.starter = f }
}

// startSession is the engine's StartSession for a listener's sessions, or
// nil without a SessionStarter. A listener's own policy (split's) stays
// under the starter's: it answers for the route the starter leaves to
// the default.
func (p *Proxy) startSession(listener string, base session.Policy) func(engine.SessionAttrs) (session.Policy, error) {
	if p.starter == nil {
		return nil
	}
	return func(a engine.SessionAttrs) (session.Policy, error) {
		pol, err := p.starter(listener, a)
		if pol == nil || err != nil || base == nil {
			return pol, err
		}
		return layered{top: pol, base: base}, nil
	}
}

// layered is a session's policy over its listener's: the listener's
// decides the role of a route the session's leaves to the default.
type layered struct {
	top, base session.Policy
}

func (l layered) Decide(st *session.Statement) session.Decision {
	d := l.top.Decide(st)
	if d.Reject == nil && d.Route.Role == session.RoleDefault {
		d.Route.Role = l.base.Decide(st).Route.Role
	}
	return d
}

// Close and SessionRoute pass on the session policy's.
func (l layered) Close() error {
	if c, ok := l.top.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (l layered) SessionRoute() session.Route {
	if r, ok := l.top.(engine.SessionRouter); ok {
		return r.SessionRoute()
	}
	return session.Route{}
}

// ListenerInfo describes one listen block as it is served.
type ListenerInfo struct {
	Name    string
	Addr    net.Addr
	Cluster string
	// Role is "writer" or "reader": where its transactions go by default.
	Role string
}

// Listeners describes the proxy's listeners, in file order.
func (p *Proxy) Listeners() []ListenerInfo {
	st := p.state.Load()
	out := make([]ListenerInfo, len(p.listeners))
	for i, l := range p.listeners {
		role := "writer"
		if r := st.cfg.Listeners[i].Role; r != "" {
			role = string(r)
		}
		out[i] = ListenerInfo{Name: l.name, Addr: l.ln.Addr(), Cluster: st.cfg.Listeners[i].Cluster, Role: role}
	}
	return out
}

func (p *Proxy) startHooks() {
	for _, h := range p.hooks {
		if err := h.Start(p); err != nil {
			p.log.Error("hook failed to start", zap.Error(err))
		}
	}
}

func (p *Proxy) stopHooks() {
	p.hooksOnce.Do(func() {
		for _, h := range p.hooks {
			h.Stop()
		}
	})
}
