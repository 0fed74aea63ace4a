package filters

import (
	"errors"

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
}

// Decision is a chain's answer for one statement: a session.Decision and,
// when Rewrite is not empty, the SQL to send in place of the statement's.
type Decision struct {
	session.Decision
	// Rewrite is the statement's new text, or "" to send it unchanged.
	Rewrite string
	// Filter names the filter that rejected the statement, or failed.
	Filter string
}

// Chain is filters applied in order: each sees the statement as the
// previous one left it (rewritten and reclassified). A later filter's route
// or pin decision overrides an earlier one's; a reject ends the chain.
type Chain []*Filter

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
	chain    Chain
	sessions []sessionState
	rewrite  session.Statement // reused for the statement a filter rewrote
	class    []sqlclass.Statement
	v        verdict
}

var _ session.Policy = (*SessionPolicy)(nil)

// ForSession starts a session on every filter of the chain (their
// sluice_on_session_start hooks) and returns the policy for its statements.
func (c Chain) ForSession(attrs SessionAttrs) *SessionPolicy {
	p := &SessionPolicy{chain: c, sessions: make([]sessionState, len(c))}
	for i, f := range c {
		s := &p.sessions[i]
		s.attrs = attrs
		s.kv = make(map[string][]byte)
		if f.sessionHook(s, true) != nil {
			s.startFailed = true
		}
	}
	return p
}

// Close ends the session on every filter (sluice_on_session_end) and drops
// its key/value stores. It is idempotent.
func (p *SessionPolicy) Close() {
	for i, f := range p.chain {
		if p.sessions[i].kv == nil {
			continue
		}
		_ = f.sessionHook(&p.sessions[i], false)
		p.sessions[i].kv = nil
	}
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
	var d Decision
	cur := st
	for i, f := range p.chain {
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
		switch v.route {
		case routeWriter:
			d.Route = session.Route{Role: session.RoleWriter}
		case routeReplica:
			d.Route = session.Route{Role: session.RoleReplica}
		case routeCluster:
			d.Route = session.Route{Role: session.RoleWriter, Cluster: v.cluster}
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
			if i+1 < len(p.chain) {
				p.class = sqlclass.Classify(p.class[:0], v.text)
				p.rewrite = *st
				p.rewrite.SQL, p.rewrite.Class = v.text, p.class
				cur = &p.rewrite
			}
		}
	}
	return d
}

// ErrSessionStart is the failure of a session's sluice_on_session_start,
// answered by the failure policy at the session's first statement.
var ErrSessionStart = errors.New("filter session start failed")
