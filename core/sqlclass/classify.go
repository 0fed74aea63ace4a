package sqlclass

import "strings"

// Classify splits a simple-query string into statements and classifies
// each. It appends one Statement per non-empty statement to dst (reuse a
// slice, dst[:0], to avoid allocation) and returns the extended slice.
// Statements that hold only white space and comments are skipped. Classify
// is safe for concurrent use; it never panics and its time is linear in
// len(sql).
func Classify(dst []Statement, sql string) []Statement {
	c := classifier{s: scanner{lex: lexer{src: sql}}}
	for c.s.lex.pos < len(sql) {
		if st, ok := c.next(); ok {
			dst = append(dst, st)
		}
	}
	return dst
}

// ClassifyOne classifies the text of a single statement, such as the query
// of an extended-protocol Parse message. Empty text gives a Statement with
// Command "". Text that holds more than one statement, which PostgreSQL
// refuses in a Parse, is classified by its first statement but pinned with
// ReasonUnknown.
func ClassifyOne(sql string) Statement {
	c := classifier{s: scanner{lex: lexer{src: sql}}}
	var first Statement
	found := false
	for c.s.lex.pos < len(sql) {
		st, ok := c.next()
		if !ok {
			continue
		}
		if found {
			first.ReadOnly = false
			first.Effects = unknownEffects()
			break
		}
		first, found = st, true
	}
	return first
}

// Span is the byte range [Start, End) of one statement in a simple-query
// string: from just after the semicolon that ends the statement before it
// (or the start of the text) to its own terminating semicolon, excluded
// (or the end of the text). It includes the white space and comments
// around the statement.
type Span struct {
	Start, End int
}

// Split returns where the statements of a simple-query string are, as
// Classify splits it: it appends to dst one Span per Statement Classify
// returns, in the same order, and returns the extended slice. Like
// Classify, it skips statements that hold only white space and comments,
// never panics, and takes time linear in len(sql).
func Split(dst []Span, sql string) []Span {
	c := classifier{s: scanner{lex: lexer{src: sql}}}
	for c.s.lex.pos < len(sql) {
		start := c.s.lex.pos
		if _, ok := c.next(); ok {
			dst = append(dst, Span{Start: start, End: c.s.end})
		}
	}
	return dst
}

// TrimLeft returns sql without the white space and comments it starts
// with, as the classifier skips them.
func TrimLeft(sql string) string {
	l := lexer{src: sql}
	l.skipSpace()
	return sql[l.pos:]
}

// next classifies the statement at the scanner's position and consumes
// it. It reports false for an empty statement.
func (c *classifier) next() (Statement, bool) {
	*c = classifier{s: c.s}
	s := &c.s
	s.start()
	t := s.next()
	if t.kind == tokEOF {
		if s.incomplete() {
			return Statement{Effects: unknownEffects()}, true
		}
		return Statement{}, false
	}
	st := c.statement(t, 0)
	s.finish()
	if s.incomplete() {
		st.ReadOnly = false
		st.Effects = unknownEffects()
	}
	return st, true
}

// unknownEffects returns the effects of a statement the classifier cannot
// understand.
func unknownEffects() []Effect {
	return []Effect{{Kind: Pin, Reason: ReasonUnknown}}
}

// maxNesting bounds the recursion of EXPLAIN into its statement.
const maxNesting = 2

// classifier gathers what one statement does while its tokens are read.
type classifier struct {
	s       scanner
	effects []Effect

	// What scanRest looks for.
	first  keyword // the statement's first key word, before what scanRest reads
	funcs  bool    // calls of known functions, and SELECT ... INTO
	pgTemp bool    // names qualified with pg_temp

	// What scanRest found.
	writes       bool // something that makes the statement not read-only
	unknownCall  bool // a call of a function not known to only read
	sawPgTemp    bool // a pg_temp-qualified name
	onCommitDrop bool // ON COMMIT DROP at parenthesis depth 0
	bodyEffects  bool // a statement with effects in a BEGIN ATOMIC body
}

// add appends e to the effects, unless it repeats the last one.
func (c *classifier) add(e Effect) {
	if n := len(c.effects); n > 0 && c.effects[n-1] == e {
		return
	}
	c.effects = append(c.effects, e)
}

// prepend puts e before the effects found so far.
func (c *classifier) prepend(e Effect) {
	if len(c.effects) == 0 {
		c.effects = []Effect{e}
		return
	}
	c.effects = append([]Effect{e}, c.effects...)
}

func (c *classifier) pin(r Reason)   { c.add(Effect{Kind: Pin, Reason: r}) }
func (c *classifier) unpin(r Reason) { c.add(Effect{Kind: Unpin, Reason: r}) }

// unknown replaces the effects with a pin for an unknown reason.
func (c *classifier) unknown() {
	c.effects = unknownEffects()
}

// result returns the Statement for cmd; readOnly says whether the command
// is one that reads only when nothing in its text says otherwise.
func (c *classifier) result(cmd string, readOnly bool) Statement {
	return Statement{Command: cmd, ReadOnly: readOnly && !c.writes && !c.unknownCall, Effects: c.effects}
}

// simple consumes the rest of a statement whose command alone decides its
// effects, and returns it.
func (c *classifier) simple(cmd string) Statement {
	c.s.drain()
	return c.result(cmd, false)
}

// query scans the rest of a statement that executes expressions and
// returns it.
func (c *classifier) query(cmd string, readOnly bool) Statement {
	c.funcs = true
	c.scanRest()
	return c.result(cmd, readOnly)
}

// statement classifies the statement whose first token is t.
func (c *classifier) statement(t token, nesting int) Statement {
	s := &c.s
	if s.isPunct(t, '(') {
		// A parenthesised query: (SELECT ...) UNION (SELECT ...).
		for s.isPunct(t, '(') {
			t = s.next()
		}
		switch s.kw(t) {
		case kwSelect:
			return c.query("SELECT", true)
		case kwValues:
			return c.query("VALUES", true)
		case kwTable:
			return c.query("TABLE", true)
		case kwWith:
			return c.query("WITH", true)
		}
		c.query("", false)
		c.unknown()
		return c.result("", false)
	}
	if t.kind != tokIdent || nesting > maxNesting {
		c.query("", false)
		c.unknown()
		return c.result("", false)
	}
	k := s.kw(t)
	c.first = k
	switch k {
	case kwSelect:
		return c.query("SELECT", true)
	case kwValues:
		return c.query("VALUES", true)
	case kwTable:
		return c.query("TABLE", true)
	case kwWith:
		return c.query("WITH", true)
	case kwShow:
		s.drain()
		return c.result("SHOW", true)
	case kwInsert:
		return c.query("INSERT", false)
	case kwUpdate:
		return c.query("UPDATE", false)
	case kwDelete:
		return c.query("DELETE", false)
	case kwMerge:
		return c.query("MERGE", false)
	case kwExplain:
		return c.explain(nesting)
	case kwSet:
		return c.set()
	case kwReset:
		return c.reset()
	case kwBegin:
		return c.begin("BEGIN")
	case kwStart:
		return c.begin("START TRANSACTION")
	case kwCommit, kwEnd:
		if s.kw(s.peek()) == kwPrepared {
			return c.simple("COMMIT PREPARED")
		}
		return c.simple("COMMIT")
	case kwRollback, kwAbort:
		if s.kw(s.peek()) == kwPrepared {
			return c.simple("ROLLBACK PREPARED")
		}
		return c.simple("ROLLBACK")
	case kwSavepoint:
		return c.simple("SAVEPOINT")
	case kwRelease:
		return c.simple("RELEASE")
	case kwPrepare:
		return c.prepare()
	case kwExecute:
		return c.query("EXECUTE", false)
	case kwDeallocate:
		n := s.next()
		if s.kw(n) == kwPrepare {
			n = s.next()
		}
		if s.kw(n) == kwAll {
			c.unpin(ReasonPrepare)
		}
		return c.simple("DEALLOCATE")
	case kwListen:
		c.pin(ReasonListen)
		return c.simple("LISTEN")
	case kwUnlisten:
		if s.isPunct(s.next(), '*') {
			c.unpin(ReasonListen)
		}
		return c.simple("UNLISTEN")
	case kwNotify:
		return c.simple("NOTIFY")
	case kwDiscard:
		switch s.kw(s.next()) {
		case kwAll:
			c.add(Effect{Kind: DiscardAll})
		case kwTemp, kwTemporary:
			c.unpin(ReasonTempObject)
		case kwPlans, kwSequences:
		default:
			c.unknown()
		}
		return c.simple("DISCARD")
	case kwDeclare:
		return c.declare()
	case kwClose:
		if s.kw(s.next()) == kwAll {
			c.unpin(ReasonCursorWithHold)
		}
		return c.simple("CLOSE")
	case kwFetch:
		return c.simple("FETCH")
	case kwMove:
		return c.simple("MOVE")
	case kwLoad:
		c.pin(ReasonLoad)
		return c.simple("LOAD")
	case kwCopy:
		return c.query("COPY", false)
	case kwCall:
		return c.query("CALL", false)
	case kwDo:
		return c.simple("DO")
	case kwLock:
		return c.simple("LOCK TABLE")
	case kwTruncate:
		return c.simple("TRUNCATE TABLE")
	case kwVacuum:
		return c.simple("VACUUM")
	case kwAnalyze, kwAnalyse:
		return c.simple("ANALYZE")
	case kwCluster:
		return c.simple("CLUSTER")
	case kwReindex:
		return c.simple("REINDEX")
	case kwCheckpoint:
		return c.simple("CHECKPOINT")
	case kwGrant:
		return c.simple("GRANT")
	case kwRevoke:
		return c.simple("REVOKE")
	case kwComment:
		return c.simple("COMMENT")
	case kwSecurity:
		return c.simple("SECURITY LABEL")
	case kwRefresh:
		return c.simple("REFRESH MATERIALIZED VIEW")
	case kwImport:
		return c.simple("IMPORT FOREIGN SCHEMA")
	case kwReassign:
		return c.simple("REASSIGN OWNED")
	case kwCreate:
		return c.create(t, nesting)
	case kwAlter:
		return c.simple(c.ddlTag(t, s.next()))
	case kwDrop:
		return c.simple(c.ddlTag(t, s.next()))
	}
	// A command the classifier does not know (or not a command at all, which
	// the server will refuse): it has no effects the classifier can name, but
	// calls in it are still looked at.
	return c.query(strings.ToUpper(s.text(t)), false)
}

// scanRest reads the rest of the statement, looking for what makes it
// write and for calls of functions with session effects.
func (c *classifier) scanRest() {
	s := &c.s
	src := s.lex.src
	var prev, prev2, prev3 token // the previous tokens; kind tokEOF at the start
	prevKw, prev2Kw := c.first, kwNone
	updates, settings := c.first == kwUpdate, false
	for {
		t := s.next()
		if t.kind == tokEOF {
			if updates && settings && c.funcs {
				// UPDATE pg_settings SET setting = ... calls set_config(..., false).
				c.pin(ReasonSetConfig)
			}
			return
		}
		k := kwNone
		switch t.kind {
		case tokIdent:
			w := src[t.start:t.end]
			k = restKeyword(w)
			switch k {
			case kwInsert, kwUpdate, kwDelete, kwMerge:
				// The statement itself, a data-modifying WITH query, or FOR
				// [NO KEY] UPDATE.
				c.writes = true
				if k == kwUpdate {
					updates = true
				}
			case kwNone:
				if len(w) == len("pg_settings") && strings.EqualFold(w, "pg_settings") {
					settings = true
				}
			case kwShare, kwKey, kwNo:
				if prevKw == kwFor { // FOR SHARE, FOR KEY SHARE, FOR NO KEY UPDATE
					c.writes = true
				}
			case kwInto:
				if prevKw != kwInsert && prevKw != kwMerge && c.funcs {
					c.writes = true // SELECT ... INTO creates a table
					if c.intoTemp() {
						c.pin(ReasonTempObject)
					}
				}
			case kwDrop:
				if prevKw == kwCommit && prev2Kw == kwOn && s.depth == 0 {
					c.onCommitDrop = true
				}
			}
		case tokPunct:
			switch src[t.start] {
			case '(':
				if c.funcs && (prev.kind == tokIdent || prev.kind == tokQIdent) {
					c.call(prev, prev2, prev3)
				}
			case '.':
				if c.pgTemp && isPgTemp(s, prev) {
					c.sawPgTemp = true
				}
			}
		}
		prev2Kw, prevKw = prevKw, k
		prev3, prev2, prev = prev2, prev, t
	}
}

// begin classifies BEGIN and START TRANSACTION, which are read-only when
// they open a READ ONLY transaction (the last of READ ONLY and READ WRITE
// counts), in which the server refuses every write.
func (c *classifier) begin(cmd string) Statement {
	s := &c.s
	readOnly := false
	for prevRead := false; ; {
		t := s.next()
		if t.kind == tokEOF {
			break
		}
		w := s.text(t)
		switch {
		case t.kind != tokIdent:
		case prevRead && strings.EqualFold(w, "only"):
			readOnly = true
		case prevRead && strings.EqualFold(w, "write"):
			readOnly = false
		}
		prevRead = t.kind == tokIdent && strings.EqualFold(w, "read")
	}
	return c.result(cmd, readOnly)
}

// intoTemp reports whether the target of SELECT ... INTO, which starts at
// the scanner's position, is a temporary table. It consumes nothing.
func (c *classifier) intoTemp() bool {
	s := &c.s
	save := *s
	defer func() { *s = save }()
	t := s.next()
	k := s.kw(t)
	if k == kwLocal || k == kwGlobal {
		k = s.kw(s.next())
	}
	switch k {
	case kwTemp, kwTemporary:
		// INTO TEMP [TABLE] name; a bare INTO temp names a table "temp".
		n := s.next()
		return n.kind == tokIdent || n.kind == tokQIdent
	case kwTable, kwUnlogged:
		t = s.next()
	}
	return isPgTemp(s, t) && s.isPunct(s.next(), '.')
}

// isPgTemp reports whether t is the name of the session's temporary schema:
// pg_temp (any case unless quoted) or pg_temp_N.
func isPgTemp(s *scanner, t token) bool {
	w := s.text(t)
	switch t.kind {
	case tokIdent:
	case tokQIdent:
		if len(w) < 2 || w[0] != '"' {
			return false
		}
		w = w[1 : len(w)-1]
		if hasUpper(w) {
			return false
		}
	default:
		return false
	}
	if len(w) < 7 || !strings.EqualFold(w[:7], "pg_temp") {
		return false
	}
	if len(w) == 7 {
		return true
	}
	if w[7] != '_' || len(w) == 8 {
		return false
	}
	for i := 8; i < len(w); i++ {
		if !isDigit(w[i]) {
			return false
		}
	}
	return true
}

// explain classifies EXPLAIN [ ( option, ... ) ] statement and EXPLAIN
// [ ANALYZE ] [ VERBOSE ] statement. Only with ANALYZE does the statement
// run, and only then do its effects count.
func (c *classifier) explain(nesting int) Statement {
	s := &c.s
	analyze := false
	t := s.next()
	if s.isPunct(t, '(') {
		analyze = c.explainOptions()
		t = s.next()
	} else {
		for {
			k := s.kw(t)
			if k == kwAnalyze || k == kwAnalyse {
				analyze = true
			} else if k != kwVerbose {
				break
			}
			t = s.next()
		}
	}
	if t.kind == tokEOF {
		return c.result("EXPLAIN", false)
	}
	inner := classifier{s: *s}
	st := inner.statement(t, nesting+1)
	*s = inner.s
	st.Command = "EXPLAIN"
	if analyze {
		st.ReadOnly = false
	} else {
		st.Effects = nil
	}
	return st
}

// explainOptions reads EXPLAIN's parenthesised options, up to and including
// the closing parenthesis, and reports whether they turn ANALYZE on.
func (c *classifier) explainOptions() bool {
	s := &c.s
	base := s.depth
	analyze := false
	for {
		t := s.next()
		if t.kind == tokEOF || s.isPunct(t, ')') && s.depth < base {
			return analyze
		}
		if k := s.kw(t); (k == kwAnalyze || k == kwAnalyse) && s.depth == base {
			v := s.peek()
			if v.kind == tokEOF || s.isPunct(v, ',') || s.isPunct(v, ')') {
				analyze = true
				continue
			}
			s.next()
			if !isFalse(s, v) {
				analyze = true
			}
		}
	}
}

// isFalse reports whether t spells a false boolean option value: false,
// off or 0, bare or quoted.
func isFalse(s *scanner, t token) bool {
	w := s.text(t)
	switch t.kind {
	case tokIdent:
	case tokString:
		if len(w) < 2 || w[0] != '\'' {
			return false
		}
		w = w[1 : len(w)-1]
	case tokNumber:
		return w == "0"
	default:
		return false
	}
	return strings.EqualFold(w, "false") || strings.EqualFold(w, "off") || w == "0"
}

// prepare classifies PREPARE name [ ( types ) ] AS statement, which pins,
// and PREPARE TRANSACTION 'id', which does not.
func (c *classifier) prepare() Statement {
	s := &c.s
	if s.kw(s.peek()) == kwTransaction {
		save := *s
		s.next()
		if s.peek().kind == tokString {
			return c.simple("PREPARE TRANSACTION")
		}
		*s = save
	}
	c.pin(ReasonPrepare)
	return c.query("PREPARE", false)
}

// declare classifies DECLARE name [ options ] CURSOR [ { WITH | WITHOUT }
// HOLD ] FOR query; WITH HOLD pins.
func (c *classifier) declare() Statement {
	s := &c.s
	s.next() // the cursor's name
	for {
		t := s.next()
		k := s.kw(t)
		if t.kind == tokEOF || k == kwFor {
			break
		}
		if k == kwWith && s.kw(s.peek()) == kwHold {
			c.pin(ReasonCursorWithHold)
		}
	}
	return c.query("DECLARE", false)
}

// hasUpper reports whether w holds an ASCII upper-case letter.
func hasUpper(w string) bool {
	for i := 0; i < len(w); i++ {
		if c := w[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}
