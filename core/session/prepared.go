package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// Protocol-level named prepared statements in transaction mode.
//
// A client's named statement lives in the session (stmtDef), not on a
// server connection. Sluice prepares it under its own name (sluice_N) on
// whichever connection the client borrows, shares it between clients with
// the same query and parameter types, and evicts the least recently used
// beyond pinning.max_prepared_statements. Bind, Describe and Close are
// rewritten to the server's name. So that the client sees exactly the
// replies PostgreSQL would send, every message keeps a reply of its own in
// the same position: a Parse of a statement the connection already has is
// sent as a Close of a name that does not exist, whose CloseComplete is
// turned back into ParseComplete; the ParseComplete of a Parse Sluice adds
// before a Bind, and the CloseComplete of an eviction, are swallowed. The
// reply queue (s.replies) records, in order, what to do with each such
// reply and where each Sync ends a batch, because after an error the
// server skips everything up to the next Sync.

// stmtDef is a client's named prepared statement.
type stmtDef struct {
	key     string // query and parameter types: the same key shares a server statement
	parse   []byte // the Parse body after the statement name: query, types
	effects []sqlclass.Effect
}

// replyKind says what to do with one reply the server owes.
type replyKind uint8

const (
	replySync         replyKind = iota + 1 // ReadyForQuery ends a batch
	replyParse                             // forward ParseComplete
	replyParseSwallow                      // swallow ParseComplete of a Parse Sluice added
	replyClose                             // forward CloseComplete
	replyCloseAsParse                      // send CloseComplete on as ParseComplete
	replyCloseSwallow                      // swallow CloseComplete of a Close Sluice added
)

// reply is one reply the server owes. For a Parse, it also says what to
// undo if the server skips or rejects it: the server statement (key), and
// the client statement (name, def) that then does not exist either.
type reply struct {
	kind    replyKind
	key     string   // server statement the Parse creates
	unnamed bool     // the Parse replaces the server's unnamed statement
	def     *stmtDef // client statement the Parse creates ...
	name    string   // ... under this name ("" with def: the unnamed one)
}

// pushReplyLocked records a reply the server owes.
func (s *Session) pushReplyLocked(r reply) { s.replies = append(s.replies, r) }

// popReplyLocked takes the next owed reply, or the zero reply.
func (s *Session) popReplyLocked() reply {
	if s.replyHead >= len(s.replies) {
		return reply{}
	}
	r := s.replies[s.replyHead]
	s.replies[s.replyHead] = reply{}
	s.replyHead++
	if s.replyHead == len(s.replies) {
		s.replies, s.replyHead = s.replies[:0], 0
	}
	return r
}

// skipToSyncLocked drops the owed replies the server will not send after
// an error: everything up to the next Sync. Statements whose Parse failed
// or was skipped exist neither on srv nor for the client, as with
// PostgreSQL itself.
func (s *Session) skipToSyncLocked(srv *pool.Conn) {
	for s.replyHead < len(s.replies) && s.replies[s.replyHead].kind != replySync {
		r := s.replies[s.replyHead]
		if r.key != "" {
			srv.Prepared.Remove(r.key)
		}
		if r.unnamed {
			srv.UnnamedKey = ""
		}
		if r.def != nil {
			if r.name == "" {
				if s.unnamed == r.def {
					s.unnamed = nil
				}
			} else if s.prepared[r.name] == r.def {
				delete(s.prepared, r.name)
			}
		}
		s.replies[s.replyHead] = reply{}
		s.replyHead++
	}
}

// rewriting reports whether named statements are translated: in
// transaction mode. In session mode the client keeps one connection and
// its messages pass through untouched.
func (s *Session) rewriting() bool { return s.env.Mode == ModeTransaction }

// forwardRewritten consumes a Parse, Bind, Describe or Close from the
// client and writes what the server must receive instead, recording the
// replies it owes. It reports false when the message is to be forwarded as
// it is (it is then still unread).
func (s *Session) forwardRewritten(srv *pool.Conn, typ byte, n int) (bool, error) {
	if n > maxClassified {
		// Not inspected (and the session is pinned): passed on as it is.
		s.mu.Lock()
		switch typ {
		case wire.MsgParse:
			s.pushReplyLocked(reply{kind: replyParse, unnamed: true})
			srv.UnnamedKey = ""
		case wire.MsgClose:
			s.pushReplyLocked(reply{kind: replyClose})
		}
		s.mu.Unlock()
		return false, nil
	}
	// Read and write outside the lock: the server reader needs it to
	// make progress while this goroutine waits for either peer.
	body, err := s.cr.PeekBody(n)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	act := s.rewriteLocked(srv, typ, body)
	s.mu.Unlock()
	switch act {
	case rewriteReplace:
		return true, s.writeOut(srv, n)
	case rewritePrefix:
		return true, s.writeOutKeep(srv, n)
	}
	return false, nil
}

// rewriteAction says what forwardRewritten writes.
type rewriteAction uint8

const (
	rewriteNone    rewriteAction = iota // the client's message as it is
	rewriteReplace                      // s.out instead of the client's message
	rewritePrefix                       // s.out, then the client's message
)

// rewriteLocked does the bookkeeping for one client message and builds
// what replaces or precedes it in s.out.
func (s *Session) rewriteLocked(srv *pool.Conn, typ byte, body []byte) rewriteAction {
	switch typ {
	case wire.MsgParse:
		name, rest, ok := bytes.Cut(body, []byte{0})
		if !ok {
			s.pushReplyLocked(reply{kind: replyParse})
			return rewriteNone
		}
		if len(name) == 0 {
			// The unnamed statement is forwarded as it is; remember it so
			// that it can be recreated on the next connection.
			def := s.unnamed
			if def == nil || def.key != string(rest) {
				def = newStmtDef(rest)
			}
			s.unnamed = def
			srv.UnnamedKey = def.key
			s.pushReplyLocked(reply{kind: replyParse, unnamed: true, def: def})
			return rewriteNone
		}
		if _, dup := s.prepared[string(name)]; dup {
			// PostgreSQL refuses a second statement of the same name with
			// 42P05 and skips to Sync: let the server say so itself, by
			// preparing the name twice; the first copy is closed later.
			out := append(s.out[:0], wire.MsgParse, 0, 0, 0, 0)
			out = append(out, name...)
			out = append(out, 0)
			out = append(out, "SELECT 1\x00\x00\x00"...)
			binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
			start := len(out)
			out = append(out, wire.MsgParse, 0, 0, 0, 0)
			out = append(out, body...)
			binary.BigEndian.PutUint32(out[start+1:], uint32(len(out)-start-1))
			s.out = out
			s.pushReplyLocked(reply{kind: replyParseSwallow})
			s.pushReplyLocked(reply{kind: replyParse})
			srv.PendingClose = append(srv.PendingClose, string(name))
			return rewriteReplace
		}
		def := newStmtDef(rest)
		if s.prepared == nil {
			s.prepared = make(map[string]*stmtDef)
		}
		s.prepared[string(name)] = def
		if _, ok := srv.Prepared.Lookup(def.key); ok {
			s.out = appendClose(s.out[:0], 'S', pool.NoopName)
			s.pushReplyLocked(reply{kind: replyCloseAsParse, def: def, name: string(name)})
		} else {
			s.out = s.appendPrepareLocked(s.out[:0], srv, def, replyParse)
			s.replies[len(s.replies)-1].def, s.replies[len(s.replies)-1].name = def, string(name)
		}
		return rewriteReplace
	case wire.MsgBind:
		portal, rest, ok := bytes.Cut(body, []byte{0})
		if !ok {
			return rewriteNone
		}
		name, rest, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			return rewriteNone
		}
		if len(name) == 0 {
			if !s.ensureUnnamedLocked(srv) {
				return rewriteNone
			}
			return rewritePrefix
		}
		def := s.prepared[string(name)]
		if def == nil {
			return rewriteNone // PostgreSQL reports the unknown statement
		}
		if def.effects != nil {
			s.applyEffectsLocked(def.effects)
		}
		out, srvName := s.ensureLocked(s.out[:0], srv, def)
		out = append(out, wire.MsgBind, 0, 0, 0, 0)
		start := len(out) - 4
		out = append(out, portal...)
		out = append(out, 0)
		out = append(out, srvName...)
		out = append(out, 0)
		out = append(out, rest...)
		binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start))
		s.out = out
		return rewriteReplace
	case wire.MsgDescribe, wire.MsgClose:
		if len(body) < 2 || body[0] != 'S' {
			if typ == wire.MsgClose {
				s.pushReplyLocked(reply{kind: replyClose})
			}
			return rewriteNone
		}
		name, _, _ := bytes.Cut(body[1:], []byte{0})
		if len(name) == 0 {
			if typ == wire.MsgClose {
				s.unnamed = nil
				srv.UnnamedKey = ""
				s.pushReplyLocked(reply{kind: replyClose})
				return rewriteNone
			}
			if !s.ensureUnnamedLocked(srv) {
				return rewriteNone
			}
			return rewritePrefix
		}
		if typ == wire.MsgClose {
			// The server keeps its statement for other clients; closing a
			// name that does not exist earns the same CloseComplete.
			delete(s.prepared, string(name))
			s.out = appendClose(s.out[:0], 'S', pool.NoopName)
			s.pushReplyLocked(reply{kind: replyClose})
			return rewriteReplace
		}
		def := s.prepared[string(name)]
		if def == nil {
			return rewriteNone
		}
		out, srvName := s.ensureLocked(s.out[:0], srv, def)
		s.out = appendNamed(out, wire.MsgDescribe, 'S', srvName)
		return rewriteReplace
	}
	return rewriteNone
}

// newStmtDef records a statement from the part of a Parse body after the
// name: the query and the parameter types.
func newStmtDef(rest []byte) *stmtDef {
	def := &stmtDef{key: string(rest), parse: bytes.Clone(rest)}
	query, _, _ := bytes.Cut(rest, []byte{0})
	if st := sqlclass.ClassifyOne(string(query)); st.Effects != nil {
		def.effects = st.Effects
	}
	return def
}

// ensureUnnamedLocked makes srv's unnamed statement the client's before a
// Bind or Describe of it: it recreates it when another client (or nobody)
// left a different one there, or closes a foreign one so that the server
// reports the missing statement as PostgreSQL would. It reports whether
// anything was put in s.out ahead of the client's message.
func (s *Session) ensureUnnamedLocked(srv *pool.Conn) bool {
	if s.unnamed == nil {
		if srv.UnnamedKey == "" {
			return false
		}
		srv.UnnamedKey = ""
		s.out = appendClose(s.out[:0], 'S', "")
		s.pushReplyLocked(reply{kind: replyCloseSwallow})
		return true
	}
	if srv.UnnamedKey == s.unnamed.key {
		return false
	}
	out := append(s.out[:0], wire.MsgParse, 0, 0, 0, 0, 0)
	out = append(out, s.unnamed.parse...)
	binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
	s.out = out
	srv.UnnamedKey = s.unnamed.key
	s.pushReplyLocked(reply{kind: replyParseSwallow, unnamed: true})
	return true
}

// ensureLocked appends, if srv lacks def, the Parse that prepares it there
// (its ParseComplete is swallowed), and returns the server's name for it.
func (s *Session) ensureLocked(out []byte, srv *pool.Conn, def *stmtDef) ([]byte, string) {
	if name, ok := srv.Prepared.Lookup(def.key); ok {
		return out, name
	}
	out = s.appendPrepareLocked(out, srv, def, replyParseSwallow)
	name, _ := srv.Prepared.Lookup(def.key)
	return out, name
}

// appendPrepareLocked appends a Parse of def under a new server name,
// preceded by the Close of any statement it evicts.
func (s *Session) appendPrepareLocked(out []byte, srv *pool.Conn, def *stmtDef, kind replyKind) []byte {
	name, evicted := srv.Prepared.Add(def.key, s.env.MaxPrepared)
	for _, old := range evicted {
		out = appendClose(out, 'S', old)
		s.pushReplyLocked(reply{kind: replyCloseSwallow})
	}
	out = append(out, wire.MsgParse, 0, 0, 0, 0)
	start := len(out) - 4
	out = append(out, name...)
	out = append(out, 0)
	out = append(out, def.parse...)
	binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start))
	s.pushReplyLocked(reply{kind: kind, key: def.key})
	return out
}

func appendClose(out []byte, what byte, name string) []byte {
	return appendNamed(out, wire.MsgClose, what, name)
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

// writeOut writes the rewritten messages in s.out to srv in place of the
// client's message (body length n), which it consumes.
func (s *Session) writeOut(srv *pool.Conn, n int) error {
	if err := s.cr.Skip(n); err != nil {
		return err
	}
	if _, err := srv.W.Write(s.out); err != nil {
		return serverWriteError{err}
	}
	return nil
}

// writeOutKeep writes s.out to srv followed by the client's message (body
// length n) as it is.
func (s *Session) writeOutKeep(srv *pool.Conn, n int) error {
	if _, err := srv.W.Write(s.out); err != nil {
		return serverWriteError{err}
	}
	if err := s.cr.Forward(srv.W, n); err != nil {
		if errors.Is(err, wire.ErrWrite) {
			return serverWriteError{err}
		}
		return err
	}
	return nil
}

// serverWriteError marks a failed write to the server in forwardRewritten.
type serverWriteError struct{ err error }

func (e serverWriteError) Error() string { return e.err.Error() }
func (e serverWriteError) Unwrap() error { return e.err }

// forgetPreparedLocked drops the client's statements and those of the
// connection it holds, after DISCARD ALL or DEALLOCATE ALL ran there.
func (s *Session) forgetPreparedLocked() {
	s.prepared = nil
	if s.server != nil {
		s.server.Prepared.Clear()
	}
}

// closePendingLocked writes the Close of statements left on srv by the
// duplicate-name emulation, at the start of a batch (never where an error
// would make the server skip them).
func (s *Session) closePendingLocked(srv *pool.Conn) error {
	out := s.out[:0]
	for _, name := range srv.PendingClose {
		out = appendClose(out, 'S', name)
		s.pushReplyLocked(reply{kind: replyCloseSwallow})
	}
	srv.PendingClose = srv.PendingClose[:0]
	s.out = out
	if _, err := srv.W.Write(out); err != nil {
		return serverWriteError{err}
	}
	return nil
}

// deallocateLocally answers a simple Query that is exactly `DEALLOCATE
// [PREPARE] name` for one of the client's protocol-level statements, which
// the server knows only under Sluice's name: the statement is forgotten and
// the client gets the CommandComplete and ReadyForQuery PostgreSQL would
// send. psycopg 3 evicts its prepared statements this way. It reports
// false, with nothing consumed, for any other message or when the client
// loop cannot answer by itself (a server reply is still owed, or the
// transaction has failed and PostgreSQL would refuse the statement).
func (s *Session) deallocateLocally(n int) (bool, error) {
	if !s.rewriting() || n > 256 {
		return false, nil
	}
	body, err := s.cr.PeekBody(n)
	if err != nil {
		return false, err
	}
	name, ok := deallocateName(body)
	if !ok {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, known := s.prepared[name]; !known {
		return false, nil
	}
	status := byte(wire.TxIdle)
	if s.server != nil {
		if s.reader != nil || s.inflight > 0 || s.batch || s.txStatus == wire.TxFailed {
			return false, nil
		}
		status = s.txStatus
	}
	delete(s.prepared, name)
	if err := s.cr.Skip(n); err != nil {
		return true, err
	}
	out := wire.AppendMessage(nil, wire.MsgCommandComplete, []byte("DEALLOCATE\x00"))
	return true, s.cw.WriteMessage(wire.AppendReadyForQuery(out, status))
}

// deallocateName returns the statement name of a Query body that holds
// only `DEALLOCATE [PREPARE] name`, with optional white space and a final
// semicolon.
func deallocateName(body []byte) (string, bool) {
	text, _, ok := bytes.Cut(body, []byte{0})
	if !ok {
		return "", false
	}
	st := sqlclass.ClassifyOne(string(text))
	if st.Command != "DEALLOCATE" || st.Effects != nil {
		return "", false
	}
	words := strings.Fields(strings.TrimSuffix(strings.TrimSpace(string(text)), ";"))
	if len(words) == 3 && strings.EqualFold(words[1], "PREPARE") {
		words = []string{words[0], words[2]}
	}
	if len(words) != 2 || !strings.EqualFold(words[0], "DEALLOCATE") {
		return "", false
	}
	name := words[1]
	if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
		name = strings.ReplaceAll(name[1:len(name)-1], `""`, `"`)
	} else {
		if strings.ContainsAny(name, `"'$;()`) || strings.EqualFold(name, "ALL") {
			return "", false
		}
		name = strings.ToLower(name)
	}
	return name, true
}
