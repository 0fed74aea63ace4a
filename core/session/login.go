package session

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// ParamCache is a pool's memory of the startup parameters its server
// accepted (pool.Pool implements it), so that a login is answered without
// borrowing a server connection. It must be safe for concurrent use and
// must not block.
type ParamCache interface {
	// KnownParams returns the server's spelling of the reported parameters
	// among the startup parameters fingerprinted by key, if the server
	// accepted them before.
	KnownParams(key string) (map[string]string, bool)
	// LearnParams records that the server accepted them.
	LearnParams(key string, spelled map[string]string)
}

// loginState is a login waiting for a server connection to validate the
// client's startup parameters.
type loginState struct {
	key      string // fingerprint of the client's startup parameters
	client   map[string]string
	defaults map[string]string
	cache    ParamCache
	fixed    []string // name, value pairs of server-described parameters the client set
}

// Login starts the session of an authenticated client. params are its
// run-time parameters from the startup packet (see StartupParams), defaults
// what a new server session reports (the pool's Defaults). In transaction
// mode, when the server accepted the same parameters before, the answer
// (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery) is
// ready at once; otherwise the step asks for a server connection on which
// the parameters are applied first, and a server error for a bad one ends
// the login as PostgreSQL's would.
func (m *Machine) Login(startup []wire.Param, defaults map[string]string, cache ParamCache) Step {
	client := make(map[string]string, len(startup))
	var fixedSets []string
	for _, p := range startup {
		name := canonicalName(defaults, p.Name)
		if fixed[name] {
			// Let the server refuse it (55P02) as it does at its login.
			fixedSets = append(fixedSets, name, p.Value)
			continue
		}
		client[name] = p.Value
		m.params.claim(name)
	}
	m.params.values = make(map[string]string, len(defaults)+len(client))
	for name, v := range defaults {
		if !fixed[name] {
			m.params.values[name] = v
		}
	}
	maps.Copy(m.params.values, client)
	m.params.key = ""
	ls := &loginState{key: fingerprintOf(client), client: client, defaults: defaults, cache: cache, fixed: fixedSets}
	if m.cfg.Mode == ModeTransaction && len(fixedSets) == 0 {
		if len(client) == 0 {
			return m.loginAnswer(ls, nil)
		}
		if spelled, ok := cache.KnownParams(ls.key); ok {
			return m.loginAnswer(ls, spelled)
		}
	}
	m.login = ls
	return Step{Need: NeedServer}
}

// loginAttached applies the startup parameters on the connection borrowed
// for the login.
func (m *Machine) loginAttached() Step {
	q := m.params.syncQuery(m.srv)
	for i := 0; i < len(m.login.fixed); i += 2 {
		q += fmt.Sprintf("SELECT pg_catalog.set_config(%s, %s, false);", wire.QuoteLiteral(m.login.fixed[i]), wire.QuoteLiteral(m.login.fixed[i+1]))
	}
	if q != "" {
		return m.own(internalLogin, q, nil)
	}
	return m.loginDone(nil)
}

// loginDone ends a login that waited for a server connection.
func (m *Machine) loginDone(err *wire.Error) Step {
	ls := m.login
	m.login = nil
	if err != nil {
		// The server's own error for a bad parameter, as at its login.
		// The connection is closed rather than returned: its parameters
		// are no longer known for certain.
		m.detach()
		s := m.fatal(err)
		s.Release = ReleaseDiscard
		return s
	}
	if m.tx != wire.TxIdle {
		return m.failServer(wire.Fatalf(wire.CodeConnectionFailure, "server connection failed while applying startup parameters").Wrap(errUnexpectedStatus))
	}
	m.params.synced(m.srv)
	spelled := make(map[string]string)
	for name := range ls.client {
		if _, reported := m.srv.Reported[name]; reported {
			spelled[name] = m.srv.Params[name]
		}
	}
	ls.cache.LearnParams(ls.key, spelled)
	s := m.loginAnswer(ls, spelled)
	if m.cfg.Mode == ModeTransaction {
		m.detach()
		s.Release = ReleaseReturn
	}
	return s
}

// loginAnswer finishes the login: the client's values take the server's
// spelling (UTC for utc), and the client gets what PostgreSQL sends after
// authentication.
func (m *Machine) loginAnswer(ls *loginState, spelled map[string]string) Step {
	for name, v := range spelled {
		m.params.values[name] = v
	}
	m.params.share()
	m.params.start = m.params.shared
	if m.params.values["standard_conforming_strings"] == "off" {
		// The classifier reads strings as PostgreSQL does with it on; with
		// it off, backslashes could hide a statement from it.
		m.pin(reasonBit(sqlclass.ReasonUnknown))
	}
	if m.cfg.Mode == ModeSession {
		m.pin(pinSessionMode)
		if m.srv != nil {
			// The real backend: pg_terminate_backend and pg_stat_activity
			// lookups by the driver's PID work. The secret stays Sluice's.
			m.key.ProcessID = m.srv.ProcessID
		}
	}
	names := make([]string, 0, len(ls.defaults))
	for name := range ls.defaults {
		names = append(names, name)
	}
	sort.Strings(names)
	// A buffer of its own, not m.cout: an idle session keeps none.
	out := wire.AppendAuthenticationOk(make([]byte, 0, 64+32*len(names)))
	for _, name := range names {
		v, ok := m.params.values[name]
		if !ok {
			v = ls.defaults[name]
		}
		out = wire.AppendParameterStatus(out, name, v)
	}
	out = wire.AppendBackendKeyData(out, m.key.ProcessID, m.key.SecretKey)
	out = wire.AppendReadyForQuery(out, wire.TxIdle)
	return Step{ToClient: out}
}

// StartupParams returns the run-time parameters a client set in its
// startup packet, directly or with -c in "options", and the protocol
// options (_pq_.*) Sluice does not recognise.
func StartupParams(st *wire.Startup) ([]wire.Param, []string, error) {
	var out []wire.Param
	var unknown []string
	for _, p := range st.Params {
		switch {
		case p.Name == "user" || p.Name == "database":
		case p.Name == "replication":
			if p.Value != "false" && p.Value != "off" && p.Value != "0" && p.Value != "no" {
				return nil, nil, wire.Fatalf(wire.CodeFeatureNotSupported, "sluice does not support replication connections")
			}
		case strings.HasPrefix(p.Name, "_pq_."):
			unknown = append(unknown, p.Name)
		case p.Name == "options":
			opts, err := wire.ParseOptions(p.Value)
			if err != nil {
				return nil, nil, wire.Fatalf(wire.CodeProtocolViolation, "invalid command-line argument for server process: %v", err)
			}
			out = append(out, opts...)
		default:
			out = append(out, p)
		}
	}
	return out, unknown, nil
}
