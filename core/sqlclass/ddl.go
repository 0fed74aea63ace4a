package sqlclass

// create classifies CREATE ...; verb is the CREATE token. Temporary
// tables, views and sequences pin, as does any object created in pg_temp,
// except a table that ON COMMIT DROP removes with its transaction.
//
// https://www.postgresql.org/docs/15/sql-createtable.html
func (c *classifier) create(verb token, nesting int) Statement {
	s := &c.s
	temp := false
	t := s.next()
modifiers:
	for {
		switch s.kw(t) {
		case kwTemp, kwTemporary:
			temp = true
		case kwOr, kwReplace, kwGlobal, kwLocal, kwUnlogged, kwUnique, kwRecursive,
			kwTrusted, kwProcedural, kwDefault, kwConstraint:
		default:
			break modifiers
		}
		t = s.next()
	}
	c.pgTemp = true
	cmd := ""
	switch s.kw(t) {
	case kwTable:
		cmd = "CREATE TABLE"
		if temp {
			cmd = "CREATE TEMP TABLE"
		}
		c.funcs = true // CREATE TABLE ... AS runs its query
	case kwView:
		cmd = "CREATE VIEW"
		if temp {
			cmd = "CREATE TEMP VIEW"
		}
	case kwSequence:
		cmd = "CREATE SEQUENCE"
		if temp {
			cmd = "CREATE TEMP SEQUENCE"
		}
	case kwMaterialized:
		c.funcs = true // runs its query, unless WITH NO DATA
		cmd = c.ddlTag(verb, t)
	case kwFunction, kwProcedure:
		s.routine = true // the body may be BEGIN ATOMIC ...; ... END
		cmd = c.ddlTag(verb, t)
		c.scanRest() // the header and the body's first statement
		c.routineBody(nesting)
		if c.bodyEffects {
			c.unknown()
			return c.result(cmd, false)
		}
	default:
		temp = false
		cmd = c.ddlTag(verb, t)
	}
	c.scanRest()
	if (temp || c.sawPgTemp) && !c.onCommitDrop {
		c.prepend(Effect{Kind: Pin, Reason: ReasonTempObject})
	}
	return c.result(cmd, false)
}

// routineBody reads the statements of a BEGIN ATOMIC body after its first,
// classifying each as if it stood alone. They do not run now, and the
// server refuses the statements with session effects in a body; so one
// that has effects means that the body's end is not where the scanner
// thinks (text crafted to hide a statement in what only looks like a
// body), and the CREATE is pinned as unknown.
func (c *classifier) routineBody(nesting int) {
	// c itself classifies each statement of the body, with what it had
	// gathered set aside until the body ends: a classifier of its own for
	// each would escape to the heap (statement and routineBody call each
	// other) and cost an allocation per statement.
	outer := *c
	for c.s.stop && !c.s.done {
		c.s.stop = false
		t := c.s.next()
		if t.kind == tokEOF {
			continue // an empty statement, or the end
		}
		*c = classifier{s: c.s}
		c.statement(t, nesting+1)
		c.s.drain()
		if c.effects != nil {
			outer.bodyEffects = true
		}
	}
	outer.s = c.s
	*c = outer
}

// ddlTag reads the object type of CREATE, ALTER or DROP, whose first word is
// t (already read), and returns the command: the verb and the type's
// word(s), such as "ALTER TABLE" or "CREATE FOREIGN DATA WRAPPER". USER and
// GROUP become ROLE, as in PostgreSQL's command tags.
func (c *classifier) ddlTag(verb, t token) string {
	s := &c.s
	if t.kind != tokIdent {
		return upperWord(s.text(verb))
	}
	words := [3]token{t}
	n := 1
	switch k := s.kw(t); k {
	case kwMaterialized, kwEvent, kwAccess, kwLarge, kwForeign, kwText:
		n = 2
	case kwOperator, kwUser, kwDefault:
		switch s.kw(s.peek()) {
		case kwClass, kwFamily, kwMapping, kwPrivileges:
			n = 2
		}
	}
	for i := 1; i < n; i++ {
		w := s.peek()
		if w.kind != tokIdent {
			n = i
			break
		}
		s.next()
		words[i] = w
		// FOREIGN DATA WRAPPER and TEXT SEARCH { PARSER | ... } have three.
		if i == 1 && n == 2 && (s.kw(t) == kwForeign && s.kw(w) == kwData || s.kw(t) == kwText) {
			n = 3
		}
	}
	if n == 1 {
		if k := s.kw(t); k == kwUser || k == kwGroup {
			switch s.kw(verb) {
			case kwCreate:
				return "CREATE ROLE"
			case kwAlter:
				return "ALTER ROLE"
			case kwDrop:
				return "DROP ROLE"
			}
		}
	}
	// The command as PostgreSQL spells it: upper case, single spaces. When the
	// text already reads so, return it without allocating.
	var buf [64]byte
	b := appendUpper(buf[:0], s.text(verb))
	for _, w := range words[:n] {
		b = append(b, ' ')
		b = appendUpper(b, s.text(w))
	}
	if span := s.lex.src[verb.start:words[n-1].end]; span == string(b) {
		return span
	}
	return string(b)
}

// upperWord returns w in upper case.
func upperWord(w string) string {
	var buf [32]byte
	b := appendUpper(buf[:0], w)
	if string(b) == w {
		return w
	}
	return string(b)
}

// appendUpper appends w to b with ASCII letters in upper case.
func appendUpper(b []byte, w string) []byte {
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}
