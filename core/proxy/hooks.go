package proxy

import (
	"net"

	"go.uber.org/zap"

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
// nil without a SessionStarter.
func (p *Proxy) startSession(listener string) func(engine.SessionAttrs) (session.Policy, error) {
	if p.starter == nil {
		return nil
	}
	return func(a engine.SessionAttrs) (session.Policy, error) { return p.starter(listener, a) }
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
