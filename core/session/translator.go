package session

import (
	"bytes"
	"encoding/binary"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// translator keeps a client's protocol-level prepared statements in
// transaction mode.
//
// A client's named statement lives here, not on a server connection.
// Sluice prepares it under its own name (sluice_N) on whichever connection
// the client borrows, shares it between clients with the same query and
// parameter types, and evicts the least recently used beyond
// pinning.max_prepared_statements per connection. Bind, Describe and Close
// are rewritten to the server's name; only a Bind's head (portal and
// statement names) is rewritten, its parameters stream through untouched.
// So that the client sees exactly the replies PostgreSQL would send, every
// message keeps a reply of its own in the same position: a Parse of a
// statement the connection already has is sent as a Close of a name that
// does not exist, whose CloseComplete is turned back into ParseComplete;
// the ParseComplete of a Parse Sluice adds before a Bind, and the
// CloseComplete of an eviction, are swallowed. The replyQueue records, in
// order, what to do with each such reply.
type translator struct {
	prepared  map[string]*stmtDef // the client's named statements
	unnamed   *stmtDef            // the client's unnamed statement
	maxServer int                 // statements kept per server connection
	maxClient int                 // statements one client may hold
}

// stmtDef is a client's prepared statement.
type stmtDef struct {
	key   string // query and parameter types: the same key shares a server statement
	parse []byte // the Parse body after the statement name: query, types
	query string
	class sqlclass.Statement
	// sluice: the query is a SET, RESET or SHOW of a Sluice parameter,
	// which Sluice answers only in a simple query.
	sluice bool
}

// newStmtDef records a statement from the part of a Parse body after the
// name: the query and the parameter types.
func newStmtDef(rest []byte) *stmtDef {
	def := &stmtDef{key: string(rest), parse: bytes.Clone(rest)}
	query, _, _ := bytes.Cut(rest, []byte{0})
	def.query = string(query)
	def.class = sqlclass.ClassifyOne(def.query)
	_, def.sluice = parseSluice(def.query)
	return def
}

// define records a client statement without a server, where no server
// connection is held (a lost transaction's ROLLBACK): it is prepared on
// the next connection that needs it, as any other.
// It reports false for a name the client already uses.
func (t *translator) define(name, rest []byte) bool {
	def := newStmtDef(rest)
	if len(name) == 0 {
		t.unnamed = def
		return true
	}
	if _, taken := t.prepared[string(name)]; taken {
		return false
	}
	if t.prepared == nil {
		t.prepared = make(map[string]*stmtDef)
	}
	t.prepared[string(name)] = def
	return true
}

// endsTx reports whether the client statement name (empty: the unnamed
// one) ends a transaction: ROLLBACK, COMMIT and their synonyms.
func (t *translator) endsTx(name []byte) bool {
	def := t.unnamed
	if len(name) > 0 {
		def = t.prepared[string(name)]
	}
	return def != nil && endsTx([]byte(def.query))
}

// errTooManyStatements is the reject for a Parse beyond maxClient.
func (t *translator) errTooManyStatements() *wire.Error {
	return wire.Errorf(wire.CodeConfigLimitExceeded,
		"too many prepared statements in this session: the limit is %d (pinning.max_client_prepared_statements)", t.maxClient)
}

// exceeds reports whether a Parse (whole body) would make one statement
// more than the client may hold.
func (t *translator) exceeds(body []byte) bool {
	name, _, ok := bytes.Cut(body, []byte{0})
	if !ok || len(name) == 0 || len(t.prepared) < t.maxClient {
		return false
	}
	_, dup := t.prepared[string(name)]
	return !dup
}

// parse handles a client's Parse (whole body). It appends to out what the
// server gets instead, with replaced set, or leaves out as it is for the
// message to go as it is; or it returns an error, with out as it is, for a
// Parse the client may not make. def, when not nil, is the statement
// already made from this body.
func (t *translator) parse(out []byte, srv *pool.ServerState, q *replyQueue, body []byte, def *stmtDef) (_ []byte, replaced bool, _ *wire.Error) {
	name, rest, ok := bytes.Cut(body, []byte{0})
	if !ok {
		q.push(reply{kind: replyParse})
		return out, false, nil
	}
	if len(name) == 0 {
		// The unnamed statement is forwarded as it is; remember it so that
		// it can be recreated on the next connection.
		if def == nil || def.key != string(rest) {
			def = t.unnamed
		}
		if def == nil || def.key != string(rest) {
			def = newStmtDef(rest)
		}
		t.unnamed = def
		srv.UnnamedKey = def.key
		q.push(reply{kind: replyParse, unnamed: true, def: def})
		return out, false, nil
	}
	if _, dup := t.prepared[string(name)]; dup {
		// PostgreSQL refuses a second statement of the same name with 42P05
		// and skips to Sync: let the server say so itself, by preparing the
		// name twice; the first copy is closed at the next batch.
		start := len(out)
		out = append(out, wire.MsgParse, 0, 0, 0, 0)
		out = append(out, name...)
		out = append(out, 0)
		out = append(out, "SELECT 1\x00\x00\x00"...)
		binary.BigEndian.PutUint32(out[start+1:], uint32(len(out)-start-1))
		out = wire.AppendMessage(out, wire.MsgParse, body)
		q.push(reply{kind: replyParseSwallow})
		q.push(reply{kind: replyParse})
		srv.PendingClose = append(srv.PendingClose, string(name))
		return out, true, nil
	}
	if len(t.prepared) >= t.maxClient {
		return out, false, t.errTooManyStatements()
	}
	if def == nil || def.key != string(rest) {
		def = newStmtDef(rest)
	}
	if t.prepared == nil {
		t.prepared = make(map[string]*stmtDef)
	}
	t.prepared[string(name)] = def
	if _, ok := srv.Prepared.Lookup(def.key); ok {
		out = appendNamed(out, wire.MsgClose, 'S', pool.NoopName)
		q.push(reply{kind: replyCloseAsParse, def: def, name: string(name)})
	} else {
		out = t.appendPrepare(out, srv, q, def, replyParse)
		last := &q.items[len(q.items)-1]
		last.def, last.name = def, string(name)
	}
	return out, true, nil
}

// bindHead splits the head of a Bind body into its portal and statement
// names; ok is false when the head does not hold both.
func bindHead(head []byte) (portal, name []byte, ok bool) {
	portal, rest, ok := bytes.Cut(head, []byte{0})
	if !ok {
		return nil, nil, false
	}
	name, _, ok = bytes.Cut(rest, []byte{0})
	return portal, name, ok
}

// bind handles a client's Bind, of which head holds at least the portal and
// statement names and n is the body length. It appends to out what is
// written to the server before the rest of the client's message, and
// returns how many bytes of the client's message (header included) that
// replaces: with skip 0 the message goes as it is, after what was appended.
// def is the client statement bound, if known.
func (t *translator) bind(out []byte, srv *pool.ServerState, q *replyQueue, head []byte, n int) (_ []byte, skip int, def *stmtDef) {
	portal, name, ok := bindHead(head)
	if !ok {
		return out, 0, nil // malformed: the server says so
	}
	if len(name) == 0 {
		return t.ensureUnnamed(out, srv, q), 0, t.unnamed
	}
	def = t.prepared[string(name)]
	if def == nil {
		return out, 0, nil // PostgreSQL reports the unknown statement
	}
	out, srvName := t.ensure(out, srv, q, def)
	namesLen := len(portal) + 1 + len(name) + 1
	out = append(out, wire.MsgBind)
	out = binary.BigEndian.AppendUint32(out, uint32(4+len(portal)+1+len(srvName)+1+n-namesLen))
	out = append(out, portal...)
	out = append(out, 0)
	out = append(out, srvName...)
	out = append(out, 0)
	return out, wire.HeaderLen + namesLen, def
}

// describeOrClose handles a client's Describe or Close (whole body). It
// appends to out what the server gets before the client's message, or
// instead of it when replace is set.
func (t *translator) describeOrClose(out []byte, srv *pool.ServerState, q *replyQueue, typ byte, body []byte) (_ []byte, replace bool) {
	if len(body) < 2 || body[0] != 'S' {
		if typ == wire.MsgClose {
			q.push(reply{kind: replyClose})
		}
		return out, false
	}
	name, _, _ := bytes.Cut(body[1:], []byte{0})
	if len(name) == 0 {
		if typ == wire.MsgClose {
			t.unnamed = nil
			srv.UnnamedKey = ""
			q.push(reply{kind: replyClose})
			return out, false
		}
		return t.ensureUnnamed(out, srv, q), false
	}
	if typ == wire.MsgClose {
		// The server keeps its statement for other clients; closing a name
		// that does not exist earns the same CloseComplete.
		delete(t.prepared, string(name))
		q.push(reply{kind: replyClose})
		return appendNamed(out, wire.MsgClose, 'S', pool.NoopName), true
	}
	def := t.prepared[string(name)]
	if def == nil {
		return out, false
	}
	out, srvName := t.ensure(out, srv, q, def)
	return appendNamed(out, wire.MsgDescribe, 'S', srvName), true
}

// ensureUnnamed appends to out what makes srv's unnamed statement the
// client's before a Bind or Describe of it: it recreates it when another
// client (or nobody) left a different one there, or closes a foreign one so
// that the server reports the missing statement as PostgreSQL would. It
// appends nothing when nothing is needed.
func (t *translator) ensureUnnamed(out []byte, srv *pool.ServerState, q *replyQueue) []byte {
	if t.unnamed == nil {
		if srv.UnnamedKey == "" {
			return out
		}
		srv.UnnamedKey = ""
		q.push(reply{kind: replyCloseSwallow})
		return appendNamed(out, wire.MsgClose, 'S', "")
	}
	if srv.UnnamedKey == t.unnamed.key {
		return out
	}
	out = append(out, wire.MsgParse, 0, 0, 0, 0, 0)
	start := len(out) - 6
	out = append(out, t.unnamed.parse...)
	binary.BigEndian.PutUint32(out[start+1:], uint32(len(out)-start-1))
	srv.UnnamedKey = t.unnamed.key
	q.push(reply{kind: replyParseSwallow, unnamed: true})
	return out
}

// ensure appends, if srv lacks def, the Parse that prepares it there (its
// ParseComplete is swallowed), and returns the server's name for it.
func (t *translator) ensure(out []byte, srv *pool.ServerState, q *replyQueue, def *stmtDef) ([]byte, string) {
	if name, ok := srv.Prepared.Lookup(def.key); ok {
		return out, name
	}
	out = t.appendPrepare(out, srv, q, def, replyParseSwallow)
	name, _ := srv.Prepared.Lookup(def.key)
	return out, name
}

// appendPrepare appends a Parse of def under a new server name, preceded
// by the Close of any statement it evicts.
func (t *translator) appendPrepare(out []byte, srv *pool.ServerState, q *replyQueue, def *stmtDef, kind replyKind) []byte {
	name, evicted := srv.Prepared.Add(def.key, t.maxServer)
	for _, old := range evicted {
		out = appendNamed(out, wire.MsgClose, 'S', old)
		q.push(reply{kind: replyCloseSwallow})
	}
	out = append(out, wire.MsgParse, 0, 0, 0, 0)
	start := len(out) - 4
	out = append(out, name...)
	out = append(out, 0)
	out = append(out, def.parse...)
	binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start))
	q.push(reply{kind: kind, key: def.key})
	return out
}

// closePending appends the Close of statements left on srv by the
// duplicate-name emulation, at the start of a batch (never where an error
// would make the server skip them).
func (t *translator) closePending(out []byte, srv *pool.ServerState, q *replyQueue) []byte {
	for _, name := range srv.PendingClose {
		out = appendNamed(out, wire.MsgClose, 'S', name)
		q.push(reply{kind: replyCloseSwallow})
	}
	srv.PendingClose = srv.PendingClose[:0]
	return out
}

// undo forgets what a Parse the server skipped or refused would have made.
func (t *translator) undo(srv *pool.ServerState, r *reply) {
	if r.key != "" {
		srv.Prepared.Remove(r.key)
	}
	if r.unnamed {
		srv.UnnamedKey = ""
	}
	if r.def != nil {
		if r.name == "" {
			if t.unnamed == r.def {
				t.unnamed = nil
			}
		} else if t.prepared[r.name] == r.def {
			delete(t.prepared, r.name)
		}
	}
}

// forget drops the client's statements and those of srv, after DISCARD ALL
// or DEALLOCATE ALL ran there.
func (t *translator) forget(srv *pool.ServerState) {
	t.prepared = nil
	if srv != nil {
		srv.Prepared.Clear()
	}
}

// appendNamed appends a Describe or Close message of a statement ('S') or
// portal ('P') called name.
func appendNamed(out []byte, typ, what byte, name string) []byte {
	out = append(out, typ)
	out = binary.BigEndian.AppendUint32(out, uint32(4+1+len(name)+1))
	out = append(out, what)
	out = append(out, name...)
	return append(out, 0)
}
