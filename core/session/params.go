package session

import (
	"fmt"
	"maps"
	"runtime"
	"sort"
	"strings"
	"sync"
	"weak"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/wire"
)

// fixed lists reported parameters that describe the server or the role and
// that no client sets: they are never synchronised.
var fixed = map[string]bool{
	"server_version": true, "server_encoding": true, "integer_datetimes": true,
	"is_superuser": true, "session_authorization": true, "in_hot_standby": true,
	"scram_iterations": true,
}

// serverChosen are reported parameters whose value is the connection's
// own, as it opened, unless the client chose one: default_transaction_read_only
// is on for the writer's read-only pool (reader transactions that fall
// back to the writer), and a value a login saw elsewhere must not turn it
// off; a previous client's value is undone.
var serverChosen = map[string]bool{"default_transaction_read_only": true}

// params tracks a client's run-time parameters: the server's defaults
// overlaid with what the client set at startup and with tracked SETs since,
// under the names the server uses. Every borrowed connection is brought in
// line with them before the client's first message is forwarded.
type params struct {
	// values are the client's values now. While they are those of a
	// paramSet (shared), that set is the map's: put copies it before a
	// change.
	values   map[string]string
	shared   *paramSet
	start    *paramSet       // the values right after login (RESET ALL returns to them)
	key      string          // fingerprint of values; "" when it must be recomputed
	dirty    map[string]bool // tracked parameters set since they were last read back
	own      map[string]bool // serverChosen parameters the client set itself
	resetAll bool            // RESET ALL or DISCARD ALL ran since then
}

// due reports whether parameters must be read back before the connection
// may go back to the pool.
func (p *params) due() bool { return p.resetAll || len(p.dirty) > 0 }

// put sets a value, copying values first if they are shared.
func (p *params) put(name, value string) {
	if v, ok := p.values[name]; ok && v == value {
		return
	}
	if p.shared != nil {
		p.values, p.shared = maps.Clone(p.values), nil
	}
	p.values[name] = value
	p.key = ""
}

// share makes values those of the interned set with the same values.
func (p *params) share() {
	p.shared = internParams(p.values)
	p.values, p.key = p.shared.values, p.shared.key
}

// A paramSet is a set of parameter values with its fingerprint. Interned
// sets are shared by every session with the same values (most clients of
// an application log in alike) and never change.
type paramSet struct {
	values map[string]string
	key    string
}

// interned holds the paramSets sessions use, weakly: a set no session
// holds any more is collected, and its entry goes with it.
var interned = struct {
	sync.Mutex
	sets map[string]weak.Pointer[paramSet]
}{sets: map[string]weak.Pointer[paramSet]{}}

// internParams returns the interned set equal to values, interning values
// (which the caller must not change again) if there is none.
func internParams(values map[string]string) *paramSet {
	key := fingerprintOf(values)
	interned.Lock()
	defer interned.Unlock()
	if ps := interned.sets[key].Value(); ps != nil {
		return ps
	}
	ps := &paramSet{values: values, key: key}
	interned.sets[key] = weak.Make(ps)
	runtime.AddCleanup(ps, func(key string) {
		interned.Lock()
		defer interned.Unlock()
		if interned.sets[key].Value() == nil {
			delete(interned.sets, key)
		}
	}, key)
	return ps
}

// markDirty records a tracked SET or RESET of name.
func (p *params) markDirty(name string) {
	if p.dirty == nil {
		p.dirty = make(map[string]bool)
	}
	p.claim(name)
	p.dirty[strings.Clone(name)] = true
}

// claim records that the client chose its own value of name.
func (p *params) claim(name string) {
	if !serverChosen[name] {
		return
	}
	if p.own == nil {
		p.own = make(map[string]bool)
	}
	p.own[name] = true
}

// skip reports a parameter left as the connection has it.
func (p *params) skip(name string) bool {
	return fixed[name] || serverChosen[name] && !p.own[name]
}

// fingerprint returns a string that is equal for two clients exactly when
// their parameters are, computed once per change.
func (p *params) fingerprint() string {
	if p.key != "" {
		return p.key
	}
	p.key = fingerprintOf(p.values)
	return p.key
}

func fingerprintOf(values map[string]string) string {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		b.WriteString(name)
		b.WriteByte(0)
		b.WriteString(values[name])
		b.WriteByte(0)
	}
	b.WriteByte(1) // never empty
	return b.String()
}

// syncQuery returns the statement that makes srv's parameters equal the
// client's (set those that differ, reset those a previous client set that
// this one did not), or "" when they already match.
func (p *params) syncQuery(srv *pool.ServerState) string {
	key := p.fingerprint()
	if srv.ParamsKey == key {
		return ""
	}
	var sets, resets []string
	for name, want := range p.values {
		if fixed[name] {
			continue
		}
		if serverChosen[name] && !p.own[name] {
			// The connection's own value, as it opened, whatever a
			// previous client set.
			v, ok := srv.Reported[name]
			if !ok {
				continue
			}
			want = v
		}
		if have, ok := srv.Params[name]; !ok || have != want {
			sets = append(sets, fmt.Sprintf("pg_catalog.set_config(%s, %s, false)", wire.QuoteLiteral(name), wire.QuoteLiteral(want)))
		}
	}
	for name := range srv.Params {
		if _, reported := srv.Reported[name]; reported {
			continue
		}
		if _, ok := p.values[name]; !ok {
			resets = append(resets, name)
		}
	}
	if len(sets) == 0 && len(resets) == 0 {
		srv.ParamsKey = key
		return ""
	}
	sort.Strings(sets) // deterministic, for transcripts
	sort.Strings(resets)
	var q strings.Builder
	if len(sets) > 0 {
		q.WriteString("SELECT ")
		q.WriteString(strings.Join(sets, ", "))
		q.WriteString(";")
	}
	for _, name := range resets {
		q.WriteString("RESET ")
		q.WriteString(quoteIdent(name))
		q.WriteString(";")
	}
	return q.String()
}

// synced records that the sync query ran on srv without error.
func (p *params) synced(srv *pool.ServerState) {
	for name, want := range p.values {
		if _, reported := srv.Reported[name]; !reported && !p.skip(name) {
			srv.Params[name] = want
		}
	}
	for name := range srv.Params {
		if _, reported := srv.Reported[name]; reported {
			continue
		}
		if _, ok := p.values[name]; !ok {
			delete(srv.Params, name)
		}
	}
	srv.ParamsKey = p.fingerprint()
}

// readBack starts a read-back: after RESET ALL or DISCARD ALL the client's
// values return to those of its login (the server's own defaults are not
// what the client expects); tracked parameters set since are read from the
// server, which also honours ROLLBACK and savepoints. It returns the query
// and the names of the row it returns, or "" when only a sync is needed.
func (p *params) readBack(srv *pool.ServerState) (string, []string) {
	dirty, resetAll := p.dirty, p.resetAll
	p.dirty, p.resetAll = nil, false
	if resetAll {
		p.values, p.shared, p.key = p.start.values, p.start, p.start.key
		srv.ForgetSetParams()
		for name := range p.values {
			delete(dirty, strings.ToLower(name))
		}
	}
	if len(dirty) == 0 {
		return "", nil
	}
	names := make([]string, 0, len(dirty))
	for name := range dirty {
		names = append(names, name)
	}
	sort.Strings(names)
	var q strings.Builder
	q.WriteString("SELECT ")
	for i, name := range names {
		if i > 0 {
			q.WriteString(", ")
		}
		fmt.Fprintf(&q, "pg_catalog.current_setting(%s)", wire.QuoteLiteral(name))
	}
	return q.String(), names
}

// applyRow records the values a read-back returned.
func (p *params) applyRow(srv *pool.ServerState, names, values []string) {
	for i, name := range names {
		if i >= len(values) {
			break
		}
		name = canonicalName(srv.Reported, name)
		p.put(name, values[i])
		srv.Params[name] = values[i]
	}
}

// canonicalName returns the spelling the server uses for a parameter it
// reports (TimeZone for timezone), else the name in lower case, as
// PostgreSQL treats parameter names case-insensitively.
func canonicalName(reported map[string]string, name string) string {
	if _, ok := reported[name]; ok {
		return name
	}
	for r := range reported {
		if strings.EqualFold(r, name) {
			return r
		}
	}
	return strings.ToLower(name)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
