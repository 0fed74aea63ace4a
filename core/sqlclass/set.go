package sqlclass

import "strings"

// set classifies SET. SET and SET SESSION of a parameter are reported for
// tracking; SET LOCAL, SET TRANSACTION and SET CONSTRAINTS last only until
// the end of the transaction and have no effect on the session.
//
// https://www.postgresql.org/docs/15/sql-set.html
func (c *classifier) set() Statement {
	s := &c.s
	t := s.next()
	k := s.kw(t)
	if (k == kwSession || k == kwLocal) && !c.nameFollows() {
		if k == kwLocal {
			return c.simple("SET")
		}
		if n := s.kw(s.peek()); n != kwAuthorization && n != kwCharacteristics {
			t = s.next() // SET SESSION ...: the same as SET ...
			k = s.kw(t)
		}
	}
	if c.nameFollows() {
		k = kwNone // a parameter name that is also a key word: SET role = ...
	}
	switch k {
	case kwTransaction, kwConstraints:
	case kwSession:
		switch s.kw(s.next()) {
		case kwAuthorization:
			v := c.value()
			c.setSessionAuthorization(v)
		default:
			// SET SESSION CHARACTERISTICS AS TRANSACTION ... changes the
			// session's transaction defaults in a form not reported for replay.
			c.unknown()
		}
	case kwRole:
		c.setRole(c.value())
	case kwTime:
		if s.kw(s.next()) != kwZone {
			c.unknown()
			break
		}
		v := c.value()
		switch {
		case v.n == 0:
			c.unknown()
		case c.valueIs(v, kwLocal) || c.valueIs(v, kwDefault):
			c.add(Effect{Kind: ResetParam, Name: "timezone"})
		default:
			c.add(Effect{Kind: SetParam, Name: "timezone", Value: v.text})
		}
	case kwSchema:
		if v := c.value(); v.n == 0 {
			c.unknown()
		} else {
			c.add(Effect{Kind: SetParam, Name: "search_path", Value: v.text})
		}
	case kwNames:
		if v := c.value(); v.n == 0 || c.valueIs(v, kwDefault) {
			c.add(Effect{Kind: ResetParam, Name: "client_encoding"})
		} else {
			c.add(Effect{Kind: SetParam, Name: "client_encoding", Value: v.text})
		}
	case kwXML:
		if s.kw(s.next()) != kwOption {
			c.unknown()
			break
		}
		if v := c.value(); v.n == 0 {
			c.unknown()
		} else {
			c.add(Effect{Kind: SetParam, Name: "xmloption", Value: v.text})
		}
	default:
		c.setGeneric(t)
	}
	return c.simple("SET")
}

// setGeneric classifies SET name { TO | = } value and SET name FROM
// CURRENT, where t is the first token of the name.
func (c *classifier) setGeneric(t token) {
	s := &c.s
	name, ok := c.paramName(t)
	if !ok {
		c.unknown()
		return
	}
	op := s.next()
	switch {
	case s.kw(op) == kwFrom:
		if s.kw(s.next()) == kwCurrent && s.next().kind == tokEOF {
			c.pin(ReasonSetFromCurrent) // the value is known only to the server
		} else {
			c.unknown()
		}
		return
	case s.kw(op) != kwTo && !s.isPunct(op, '='):
		c.unknown()
		return
	}
	v := c.value()
	switch {
	case v.n == 0:
		c.unknown()
	case name == "role":
		c.setRole(v)
	case name == "session_authorization":
		c.setSessionAuthorization(v)
	case c.valueIs(v, kwDefault):
		c.add(Effect{Kind: ResetParam, Name: name})
	default:
		c.add(Effect{Kind: SetParam, Name: name, Value: v.text})
	}
}

// setRole records SET ROLE v: NONE (or 'none') and DEFAULT return to the
// session user; any other role pins.
func (c *classifier) setRole(v value) {
	switch {
	case v.n == 0:
		c.unknown()
	case c.valueIs(v, kwNoneWord) || c.valueIs(v, kwDefault) || v.n == 1 && v.text == "'none'":
		c.unpin(ReasonSetRole)
	default:
		c.pin(ReasonSetRole)
	}
}

// setSessionAuthorization records SET SESSION AUTHORIZATION v: DEFAULT
// returns to the authenticated user, any other user pins. Either way the
// server also resets the role, as RESET ROLE would.
func (c *classifier) setSessionAuthorization(v value) {
	switch {
	case v.n == 0:
		c.unknown()
		return
	case c.valueIs(v, kwDefault):
		c.unpin(ReasonSessionAuthorization)
	default:
		c.pin(ReasonSessionAuthorization)
	}
	c.unpin(ReasonSetRole)
}

// reset classifies RESET.
//
// https://www.postgresql.org/docs/15/sql-reset.html
func (c *classifier) reset() Statement {
	s := &c.s
	t := s.next()
	k := s.kw(t)
	if s.isPunct(s.peek(), '.') {
		k = kwNone
	}
	switch k {
	case kwAll:
		c.add(Effect{Kind: ResetAll})
	case kwRole:
		c.unpin(ReasonSetRole)
	case kwSession:
		if s.kw(s.next()) != kwAuthorization {
			c.unknown()
			return c.simple("RESET")
		}
		c.unpin(ReasonSessionAuthorization)
		c.unpin(ReasonSetRole)
	case kwTime:
		if s.kw(s.next()) != kwZone {
			c.unknown()
			return c.simple("RESET")
		}
		c.add(Effect{Kind: ResetParam, Name: "timezone"})
	case kwTransaction:
		// RESET TRANSACTION ISOLATION LEVEL: transaction-scoped.
		return c.simple("RESET")
	default:
		name, ok := c.paramName(t)
		switch {
		case !ok:
			c.unknown()
			return c.simple("RESET")
		case name == "role":
			c.unpin(ReasonSetRole)
		case name == "session_authorization":
			c.unpin(ReasonSessionAuthorization)
			c.unpin(ReasonSetRole)
		default:
			c.add(Effect{Kind: ResetParam, Name: name})
		}
	}
	if s.next().kind != tokEOF {
		c.unknown()
	}
	return c.simple("RESET")
}

// nameFollows reports whether the token after the current one continues a
// parameter name or begins its value ('.', '=', TO, FROM): then a key word
// just read is the name of a parameter, not part of SET's syntax.
func (c *classifier) nameFollows() bool {
	s := &c.s
	n := s.peek()
	if n.kind == tokPunct {
		ch := s.lex.src[n.start]
		return ch == '.' || ch == '='
	}
	k := s.kw(n)
	return k == kwTo || k == kwFrom
}

// value is the text of a SET value: every token to the end of the
// statement.
type value struct {
	text  string // from the first token's start to the last one's end
	n     int    // the number of tokens
	first token
}

// value reads the rest of the statement as a value.
func (c *classifier) value() value {
	s := &c.s
	var v value
	start, end := 0, 0
	for {
		t := s.next()
		if t.kind == tokEOF {
			break
		}
		if v.n == 0 {
			v.first, start = t, t.start
		}
		end = t.end
		v.n++
	}
	v.text = s.lex.src[start:end]
	return v
}

// valueIs reports whether v is the single key word k.
func (c *classifier) valueIs(v value, k keyword) bool {
	return v.n == 1 && c.s.kw(v.first) == k
}

// maxNameParts bounds the dotted parts of a parameter name.
const maxNameParts = 4

// paramName reads a parameter name, whose first token t has been read:
// words or quoted words joined by dots, such as search_path, "TimeZone" or
// app.tenant_id. It returns the name in lower case (names of parameters
// are case-insensitive), as a slice of the input when the text already
// spells it so.
func (c *classifier) paramName(t token) (string, bool) {
	s := &c.s
	if t.kind != tokIdent && t.kind != tokQIdent {
		return "", false
	}
	parts := [maxNameParts]token{t}
	n := 1
	if isUnicodeIdent(s, t) {
		return "", false // U&"\0072ole" may spell any name
	}
	for s.isPunct(s.peek(), '.') {
		s.next()
		p := s.next()
		if p.kind != tokIdent && p.kind != tokQIdent || n == maxNameParts || isUnicodeIdent(s, p) {
			return "", false
		}
		parts[n] = p
		n++
	}
	simple := true
	for i, p := range parts[:n] {
		if p.kind != tokIdent || hasUpper(s.text(p)) || i > 0 && p.start != parts[i-1].end+1 {
			simple = false
			break
		}
	}
	if simple {
		return s.lex.src[t.start:parts[n-1].end], true
	}
	var b strings.Builder
	for i, p := range parts[:n] {
		if i > 0 {
			b.WriteByte('.')
		}
		w := s.text(p)
		if p.kind == tokQIdent {
			w = unquoteIdent(w)
		}
		if w == "" {
			return "", false // a zero-length name, which the server refuses
		}
		for j := 0; j < len(w); j++ {
			ch := w[j]
			if ch >= 'A' && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			b.WriteByte(ch)
		}
	}
	return b.String(), true
}

// isUnicodeIdent reports whether t is a quoted identifier with Unicode
// escapes, U&"...", whose name the classifier does not decode.
func isUnicodeIdent(s *scanner, t token) bool {
	return t.kind == tokQIdent && s.lex.src[t.start] != '"'
}

// unquoteIdent returns the name a quoted identifier ("...") spells, with
// "" turned into ".
func unquoteIdent(w string) string {
	w = strings.TrimPrefix(w, `"`)
	if strings.HasSuffix(w, `"`) {
		w = w[:len(w)-1]
	}
	return strings.ReplaceAll(w, `""`, `"`)
}
