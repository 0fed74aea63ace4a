package session

import (
	"bytes"
	"strings"

	"github.com/sluicedb/sluice/core/wire"
)

// Sluice's own run-time parameters, which a client sets and shows with
// SET, RESET and SHOW as if they were PostgreSQL's; they never reach the
// server.
const (
	// paramMinLSN is the WAL position a replica must have replayed before
	// it serves the client's reads: a client that wrote through another
	// connection (SHOW sluice.last_lsn there) sets it to read its write.
	paramMinLSN = "sluice.min_lsn"
	// paramLastLSN is the writer's WAL position after the client's last
	// commit that wrote, recorded with read_your_writes; read-only.
	paramLastLSN = "sluice.last_lsn"
)

// sluiceVerb is what a statement does with a Sluice parameter.
type sluiceVerb uint8

const (
	verbSet sluiceVerb = iota + 1
	verbReset
	verbShow
)

// sluiceStmt is a simple query that is a statement about a Sluice
// parameter.
type sluiceStmt struct {
	verb  sluiceVerb
	name  string // paramMinLSN or paramLastLSN
	local bool   // SET LOCAL
	// value is what SET sets, as PostgreSQL reads it (a string's contents,
	// an unquoted word folded to lower case); "" for DEFAULT.
	value string
	// err is the answer to a statement about a Sluice parameter that
	// PostgreSQL would refuse: a syntax error, several values, more
	// statements in the same query.
	err *wire.Error
}

// parseSluice reports whether sql is a statement about one of Sluice's
// parameters: SET [SESSION | LOCAL] name {TO | =} value, SET name TO
// DEFAULT, RESET name or SHOW name, with name sluice.min_lsn or
// sluice.last_lsn (in any case, quoted or not). Such a statement must be
// the query's only one. For any other text it returns false, at the cost
// of reading its first word or two.
func parseSluice(sql string) (sluiceStmt, bool) {
	lx := sluiceLexer{src: sql}
	var st sluiceStmt
	t := lx.next()
	switch {
	case t.isWord("set"):
		st.verb = verbSet
	case t.isWord("reset"):
		st.verb = verbReset
	case t.isWord("show"):
		st.verb = verbShow
	default:
		return st, false
	}
	t = lx.next()
	if st.verb == verbSet {
		if t.isWord("session") {
			t = lx.next()
		} else if t.isWord("local") {
			st.local = true
			t = lx.next()
		}
	}
	if !t.isName("sluice") || !lx.next().isPunct('.') {
		return st, false
	}
	switch t = lx.next(); {
	case t.isName("min_lsn"):
		st.name = paramMinLSN
	case t.isName("last_lsn"):
		st.name = paramLastLSN
	default:
		return st, false
	}
	// From here on the statement is Sluice's, well formed or not.
	t = lx.next()
	if st.verb == verbSet {
		if !t.isWord("to") && !t.isPunct('=') {
			st.err = syntaxError(t)
			return st, true
		}
		values := 0
		for {
			t = lx.next()
			switch {
			case values == 0 && t.isWord("default"):
				st.value = ""
			case t.kind == tokString, t.kind == tokNumber:
				st.value = t.text
			case t.kind == tokWord:
				st.value = strings.ToLower(t.text)
			case t.kind == tokQuoted:
				st.value = t.text
			default:
				st.err = syntaxError(t)
				return st, true
			}
			values++
			if t = lx.next(); !t.isPunct(',') {
				break
			}
		}
		if values > 1 {
			st.err = wire.Errorf(wire.CodeInvalidParameterValue, "SET %s takes only one argument", st.name)
			return st, true
		}
	}
	semicolon := false
	for t.isPunct(';') {
		semicolon = true
		t = lx.next()
	}
	switch {
	case t.kind == tokEnd:
	case semicolon:
		st.err = wire.Errorf(wire.CodeFeatureNotSupported, "%s %s must be sent in a query of its own", st.verbText(), st.name)
	default:
		st.err = syntaxError(t)
	}
	return st, true
}

// verbText returns the statement's command.
func (st *sluiceStmt) verbText() string {
	switch st.verb {
	case verbSet:
		return "SET"
	case verbReset:
		return "RESET"
	}
	return "SHOW"
}

// syntaxError is PostgreSQL's error for an unexpected token.
func syntaxError(t sluiceToken) *wire.Error {
	if t.kind == tokEnd {
		return wire.Errorf(wire.CodeSyntaxError, "syntax error at end of input")
	}
	return wire.Errorf(wire.CodeSyntaxError, "syntax error at or near %q", t.raw)
}

// sluiceAnswer answers a statement about a Sluice parameter as PostgreSQL
// answers SET, RESET and SHOW, in the transaction status of the held
// connection (nothing is owed by it).
func (m *Machine) sluiceAnswer(st *sluiceStmt, all int) Step {
	status := byte(wire.TxIdle)
	if m.srv != nil {
		status = m.tx
	}
	if status == wire.TxFailed {
		return m.sluiceRefuse(all, wire.Errorf(wire.CodeInFailedTransaction,
			"current transaction is aborted, commands ignored until end of transaction block"))
	}
	if st.err != nil {
		return m.sluiceRefuse(all, st.err)
	}
	out := m.cout[:0]
	switch st.verb {
	case verbSet, verbReset:
		if st.name == paramLastLSN {
			return m.sluiceRefuse(all, wire.Errorf(wire.CodeCantChangeRuntimeParam, "parameter %q cannot be changed", st.name))
		}
		var v LSN
		if st.verb == verbSet && st.value != "" {
			var ok bool
			if v, ok = ParseLSN(st.value); !ok {
				return m.sluiceRefuse(all, wire.Errorf(wire.CodeInvalidTextRepresentation, "invalid input syntax for type pg_lsn: %q", st.value))
			}
		}
		if !st.local {
			// Inside a transaction, as PostgreSQL's SET, the value lasts
			// only if the transaction commits.
			if status == wire.TxActive && !m.minInTx {
				m.minInTx, m.busy.minBefore = true, m.minLSN
			}
			m.minLSN = v
		}
		// SET LOCAL would last until the end of the transaction, whose
		// server is already chosen: it changes nothing.
		out = wire.AppendMessage(out, wire.MsgCommandComplete, []byte(st.verbText()+"\x00"))
	case verbShow:
		v := m.minLSN
		if st.name == paramLastLSN {
			v = m.lastLSN
		}
		out = appendShow(out, st.name, v)
	}
	m.cout = wire.AppendReadyForQuery(out, status)
	return Step{Skip: all, ToClient: m.cout}
}

// sluiceRefuse answers a statement about a Sluice parameter with e, as
// PostgreSQL answers a failed statement: a held connection's transaction
// fails with it.
func (m *Machine) sluiceRefuse(all int, e *wire.Error) Step {
	if m.srv == nil {
		return m.rejectLocally(wire.MsgQuery, all, e)
	}
	return m.rejectHeld(wire.MsgQuery, all, m.out[:0], e)
}

// appendShow appends the replies of SHOW name with the value v: one text
// column named after the parameter, as PostgreSQL names it.
func appendShow(out []byte, name string, v LSN) []byte {
	var body []byte
	body = append(body, 0, 1) // one field
	body = append(body, name...)
	body = append(body, 0,
		0, 0, 0, 0, // table OID
		0, 0, // column number
		0, 0, 0, 25, // type text
		0xff, 0xff, // typlen -1
		0xff, 0xff, 0xff, 0xff, // typmod -1
		0, 0) // text format
	out = wire.AppendMessage(out, wire.MsgRowDescription, body)
	text := v.append(nil)
	body = append(body[:0], 0, 1, 0, 0, 0, byte(len(text)))
	body = append(body, text...)
	out = wire.AppendMessage(out, wire.MsgDataRow, body)
	return wire.AppendMessage(out, wire.MsgCommandComplete, []byte("SHOW\x00"))
}

// errExtendedSluice refuses a Parse of a statement about a Sluice
// parameter: Sluice answers those only in simple queries.
var errExtendedSluice = wire.Errorf(wire.CodeFeatureNotSupported,
	"SET, RESET and SHOW of sluice.min_lsn and sluice.last_lsn must be sent as simple queries, not prepared")

// sluiceLexer splits the text of a statement about a Sluice parameter into
// the few kinds of token its grammar has, skipping white space and
// comments. It is not sqlclass's lexer: it reads only until it knows that
// a statement is not one of these.
type sluiceLexer struct {
	src string
	pos int
}

type sluiceTokenKind uint8

const (
	tokEnd    sluiceTokenKind = iota
	tokWord                   // an unquoted identifier or key word
	tokQuoted                 // a quoted identifier; text is its name
	tokString                 // a string constant; text is its value
	tokNumber
	tokPunct
)

type sluiceToken struct {
	kind sluiceTokenKind
	text string // the word, name, value or character
	raw  string // as written
}

func (t sluiceToken) isWord(w string) bool {
	return t.kind == tokWord && strings.EqualFold(t.text, w)
}

// isName reports whether t names the identifier w (lower case): an
// unquoted word in any case, or a quoted identifier exactly.
func (t sluiceToken) isName(w string) bool {
	return t.isWord(w) || t.kind == tokQuoted && t.text == w
}

func (t sluiceToken) isPunct(c byte) bool {
	return t.kind == tokPunct && t.text[0] == c
}

// skip moves past white space and comments (-- to the end of the line, and
// /* */, which nest).
func (lx *sluiceLexer) skip() {
	for lx.pos < len(lx.src) {
		c := lx.src[lx.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			lx.pos++
		case strings.HasPrefix(lx.src[lx.pos:], "--"):
			if i := strings.IndexByte(lx.src[lx.pos:], '\n'); i >= 0 {
				lx.pos += i + 1
			} else {
				lx.pos = len(lx.src)
			}
		case strings.HasPrefix(lx.src[lx.pos:], "/*"):
			depth := 0
			for lx.pos < len(lx.src) {
				if strings.HasPrefix(lx.src[lx.pos:], "/*") {
					depth++
					lx.pos += 2
				} else if strings.HasPrefix(lx.src[lx.pos:], "*/") {
					depth--
					lx.pos += 2
					if depth == 0 {
						break
					}
				} else {
					lx.pos++
				}
			}
		default:
			return
		}
	}
}

// next returns the next token.
func (lx *sluiceLexer) next() sluiceToken {
	lx.skip()
	start := lx.pos
	if start >= len(lx.src) {
		return sluiceToken{kind: tokEnd}
	}
	c := lx.src[start]
	tok := func(kind sluiceTokenKind, text string) sluiceToken {
		return sluiceToken{kind: kind, text: text, raw: lx.src[start:lx.pos]}
	}
	switch {
	case (c == 'e' || c == 'E') && start+1 < len(lx.src) && lx.src[start+1] == '\'':
		lx.pos++
		v, ok := lx.quoted('\'', true)
		if !ok {
			return tok(tokPunct, "'") // unterminated: a syntax error
		}
		return tok(tokString, v)
	case isWordStart(c):
		lx.pos++
		for lx.pos < len(lx.src) && (isWordStart(lx.src[lx.pos]) || lx.src[lx.pos] >= '0' && lx.src[lx.pos] <= '9' || lx.src[lx.pos] == '$') {
			lx.pos++
		}
		return tok(tokWord, lx.src[start:lx.pos])
	case c >= '0' && c <= '9':
		for lx.pos < len(lx.src) && (lx.src[lx.pos] >= '0' && lx.src[lx.pos] <= '9' || lx.src[lx.pos] == '.') {
			lx.pos++
		}
		return tok(tokNumber, lx.src[start:lx.pos])
	case c == '\'' || c == '"':
		v, ok := lx.quoted(c, false)
		if !ok {
			return tok(tokPunct, string(c))
		}
		if c == '"' {
			return tok(tokQuoted, v)
		}
		return tok(tokString, v)
	}
	lx.pos++
	return tok(tokPunct, lx.src[start:lx.pos])
}

// quoted reads a string or identifier quoted with q from lx.pos (at the
// opening quote), a doubled q standing for one; with escapes, a backslash
// takes the next character as it is.
func (lx *sluiceLexer) quoted(q byte, escapes bool) (string, bool) {
	var b strings.Builder
	for i := lx.pos + 1; i < len(lx.src); i++ {
		c := lx.src[i]
		switch {
		case escapes && c == '\\' && i+1 < len(lx.src):
			i++
			b.WriteByte(lx.src[i])
		case c == q && i+1 < len(lx.src) && lx.src[i+1] == q:
			i++
			b.WriteByte(q)
		case c == q:
			lx.pos = i + 1
			return b.String(), true
		default:
			b.WriteByte(c)
		}
	}
	lx.pos = len(lx.src)
	return "", false
}

func isWordStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

// maybeSluice reports, without a copy, whether a simple Query's body may
// be a statement about a Sluice parameter: it begins (after white space)
// with SET, RESET or SHOW, or with a comment, and mentions "sluice". Every
// other query is spared parseSluice after a look at its first bytes.
func maybeSluice(body []byte) bool {
	i := 0
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
		i++
	}
	rest := body[i:]
	switch {
	case len(rest) > 1 && (rest[0] == '-' && rest[1] == '-' || rest[0] == '/' && rest[1] == '*'):
	case hasWord(rest, "set"), hasWord(rest, "show"), hasWord(rest, "reset"):
	default:
		return false
	}
	for j := 0; j+6 <= len(rest); j++ {
		if rest[j]|0x20 == 's' && bytes.EqualFold(rest[j:j+6], []byte("sluice")) {
			return true
		}
	}
	return false
}

// hasWord reports whether b begins with the lower-case word w, in any
// case, followed by white space or a comment.
func hasWord(b []byte, w string) bool {
	if len(b) <= len(w) {
		return false
	}
	for i := 0; i < len(w); i++ {
		if b[i]|0x20 != w[i] {
			return false
		}
	}
	switch b[len(w)] {
	case ' ', '\t', '\n', '\r', '\f', '-', '/', '"':
		return true
	}
	return false
}
