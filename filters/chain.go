package filters

import (
	"errors"
	"io"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// CodeFilterFailed is the SQLSTATE of a statement rejected because a
// fail_closed filter failed: system_error (class 58, outside PostgreSQL).
const CodeFilterFailed = "58000"

// SessionAttrs are what a filter may read of a client session (attr_get).
type SessionAttrs struct {
	User            string
	Database        string
	ApplicationName string
	ClientAddr      string // host:port of the client
	Listener        string // the listener's name
	TLS             bool
	// ListenerRole is the listener's default role, "writer" or "reader"
	// ("" is the writer): where a statement with the default route goes.
	// It is how the host tells a route that conflicts with an open
	// transaction's server.
	ListenerRole string
}

// Decision is a chain's answer for one statement: a session.Decision and,
// when Rewrite is not empty, the SQL to send in place of the statement's.
type Decision struct {
	session.Decision
	// Rewrite is the statement's new text, or "" to send it unchanged.
	Rewrite string
	// Filter names the filter that rejected the statement, or failed.
	Filter string
	// Conflict names a filter that asked, inside an open transaction, for
	// a route other than the one the transaction's server was borrowed
	// for. The route is ignored (the server is fixed) and the host logs it
	// as an error: the filter's author should not do that.
	Conflict string
}

// Chain is filters applied in order: each sees the statement as the
// previous one left it (rewritten and reclassified). A later filter's route
// or pin decision overrides an earlier one's; a reject ends the chain.
type Chain []*Filter

// version is a chain as one load or reload made it. Sessions hold it while
// they use it; the last to let go of a version that is no longer current
// closes its filters.
type version struct {
	chain Chain
	refs  atomic.Int64 // sessions on it, plus one while it is current (or owned by the caller of Chain.ForSession)
	gen   uint64
}

func (v *version) acquire() bool {
	for {
		n := v.refs.Load()
		if n <= 0 {
			return false
		}
		if v.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (v *version) release() {
	if v.refs.Add(-1) == 0 {
		go v.chain.close()
	}
}

func (c Chain) close() {
	for _, f := range c {
		f.Close()
	}
}

// sessionState is what the host keeps for one session and one filter:
// its attributes and its key/value store. It is used by one call at a time.
type sessionState struct {
	attrs       SessionAttrs
	kv          map[string][]byte
	startFailed bool
}

// SessionPolicy is a chain bound to one client session. It implements
// session.Policy; like the session machine that calls it, it is not safe for
// concurrent use. Whoever calls ForSession must call Close when the session
// ends.
type SessionPolicy struct {
	set      *Set // nil for a Chain's own sessions
	ver      *version
	attrs    SessionAttrs
	sessions []sessionState // by filter, in the order of ver.chain
	cluster  string         // the cluster a session start chose
	txRoute  session.Route  // the route the held server was borrowed for, resolved
	rewrite  session.Statement
	class    []sqlclass.Statement
	v        verdict
	conflict bool // a conflict was logged in this transaction
	closed   bool
}

var (
	_ session.Policy = (*SessionPolicy)(nil)
	_ io.Closer      = (*SessionPolicy)(nil) // the engine ends the session with it
)

// ForSession starts a session on every filter of the chain (their
// sluice_on_session_start hooks) and returns the policy for its statements.
// A filter's rejection is returned as a *wire.Error (FATAL) with no policy.
// The filters stay the caller's to close.
func (c Chain) ForSession(attrs SessionAttrs) (*SessionPolicy, error) {
	v := &version{chain: c}
	v.refs.Store(2) // never reaches 0: the chain is the caller's
	return start(nil, v, attrs)
}

func start(set *Set, v *version, attrs SessionAttrs) (*SessionPolicy, error) {
	p := &SessionPolicy{set: set, ver: v, attrs: attrs, sessions: make([]sessionState, len(v.chain))}
	for i, f := range v.chain {
		s := &p.sessions[i]
		s.attrs = attrs
		s.kv = make(map[string][]byte)
		if err := f.sessionHook(s, true, &p.v); err != nil {
			s.startFailed = true
			continue
		}
		if p.v.action == actionReject {
			err := &wire.Error{Severity: wire.SeverityFatal, Code: p.v.code, Message: p.v.text,
				Detail: "rejected by filter " + f.cfg.Name}
			p.Close()
			return nil, err
		}
		if p.v.route == routeCluster {
			p.cluster = p.v.cluster
		}
	}
	return p, nil
}

// SessionRoute is where the session's server connections come from by
// default: the cluster a filter chose when the session started, if any.
// The engine asks it once, after the session started.
func (p *SessionPolicy) SessionRoute() session.Route {
	return session.Route{Cluster: p.cluster}
}

// Close ends the session on every filter (sluice_on_session_end) and drops
// its key/value stores. It is idempotent and always returns nil.
func (p *SessionPolicy) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	for i, f := range p.ver.chain {
		if p.sessions[i].kv == nil {
			continue
		}
		_ = f.sessionHook(&p.sessions[i], false, &p.v)
		p.sessions[i].kv = nil
	}
	p.ver.release()
	return nil
}

// Decide implements session.Policy: the chain's decision, its rewrite in
// session.Decision.Rewrite.
func (p *SessionPolicy) Decide(st *session.Statement) session.Decision {
	d := p.DecideStatement(st)
	if d.Reject == nil {
		d.Decision.Rewrite = d.Rewrite
	}
	return d.Decision
}

// DecideStatement runs the chain over st. st is not modified.
func (p *SessionPolicy) DecideStatement(st *session.Statement) Decision {
	if st.Borrow {
		p.conflict = false
		if p.set != nil {
			p.follow()
		}
	}
	d := p.decide(st)
	if d.Route.Cluster == "" {
		d.Route.Cluster = p.cluster
	}
	if st.Borrow && d.Reject == nil {
		p.txRoute = p.resolve(d.Route)
	}
	return d
}

func (p *SessionPolicy) decide(st *session.Statement) Decision {
	var d Decision
	cur := st
	for i, f := range p.ver.chain {
		s := &p.sessions[i]
		v := &p.v
		err := f.statement(s, cur, v)
		if err == nil && s.startFailed {
			err = ErrSessionStart
		}
		s.startFailed = false
		if err != nil {
			if f.cfg.FailurePolicy == FailClosed {
				return Decision{Filter: f.cfg.Name, Decision: session.Decision{
					Reject: wire.Errorf(CodeFilterFailed, "filter %q failed", f.cfg.Name).Wrap(err)}}
			}
			d.Route = session.Route{Role: session.RoleWriter}
			continue
		}
		var r session.Route
		switch v.route {
		case routeWriter:
			r = session.Route{Role: session.RoleWriter}
		case routeReplica:
			r = session.Route{Role: session.RoleReplica}
		case routeCluster:
			r = session.Route{Role: session.RoleWriter, Cluster: v.cluster}
		}
		if v.route != routeDefault {
			if st.InTransaction && !st.Borrow && p.resolve(r) != p.txRoute {
				p.conflicted(f, st, r, &d)
			} else {
				d.Route = r
			}
		}
		switch v.pin {
		case pinForce:
			d.Pin, d.PinReason = session.PinForce, v.pinReason
		case pinNever:
			d.Pin, d.PinReason = session.PinNever, ""
		}
		switch v.action {
		case actionReject:
			d.Reject = &wire.Error{Severity: wire.SeverityError, Code: v.code, Message: v.text}
			d.Filter = f.cfg.Name
			return d
		case actionRewrite:
			d.Rewrite, d.Filter = v.text, f.cfg.Name
			if i+1 < len(p.ver.chain) {
				p.class = sqlclass.Classify(p.class[:0], v.text)
				p.rewrite = *st
				p.rewrite.SQL, p.rewrite.Class = v.text, p.class
				cur = &p.rewrite
			}
		}
	}
	return d
}

// resolve fills in a route's defaults as the proxy would: the listener's
// role and the session's cluster.
func (p *SessionPolicy) resolve(r session.Route) session.Route {
	if r.Role == session.RoleDefault {
		r.Role = session.RoleWriter
		if p.attrs.ListenerRole == "reader" {
			r.Role = session.RoleReplica
		}
	}
	if r.Cluster == "" {
		r.Cluster = p.cluster
	}
	r.MinLSN = 0
	return r
}

// conflicted records a route asked for inside a transaction that its
// server cannot serve: logged once per transaction, counted, and shown in
// the decision; the route is ignored.
func (p *SessionPolicy) conflicted(f *Filter, st *session.Statement, r session.Route, d *Decision) {
	d.Conflict = f.cfg.Name
	f.m.conflicts.Add(1)
	if p.conflict {
		return
	}
	p.conflict = true
	want := r.Role.String()
	if r.Cluster != "" {
		want = "cluster " + r.Cluster
	}
	have := p.txRoute.Role.String()
	if p.txRoute.Cluster != "" {
		have += " of cluster " + p.txRoute.Cluster
	}
	f.log.Error("filter routed a statement inside a transaction away from its server; the route is ignored",
		zap.String("route", want), zap.String("transaction_on", have),
		zap.String("sql", truncate(st.SQL, 200)))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ErrSessionStart is the failure of a session's sluice_on_session_start,
// answered by the failure policy at the session's first statement.
var ErrSessionStart = errors.New("filter session start failed")

// atomicVersion is the current version of a Set.
type atomicVersion = atomic.Pointer[version]
