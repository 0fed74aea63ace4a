package sqlclass

// scanner reads the tokens of one statement at a time. A statement ends at
// a semicolon or at the end of the input, except that semicolons inside
// the BEGIN ATOMIC ... END body of CREATE FUNCTION or CREATE PROCEDURE
// only end one statement of the body (a segment): at parenthesis depth 0,
// BEGIN ATOMIC opens a block, CASE inside a block opens another, and END
// closes one. The scanner is a value: copying it saves its position.
type scanner struct {
	lex lexer
	// depth is the parenthesis depth within the statement.
	depth int
	// routine is set once the statement is known to be CREATE FUNCTION or
	// CREATE PROCEDURE; blocks counts the open blocks then, and afterBegin
	// says whether the last token was BEGIN.
	routine    bool
	afterBegin bool
	blocks     int
	// stop is set at a semicolon inside a block: next returns the end of a
	// segment until the caller clears stop.
	stop bool
	// done is set when the statement's end has been read; end is then the
	// offset of its terminating semicolon, or the length of the input.
	done bool
	end  int
}

// start prepares the scanner for the next statement.
func (s *scanner) start() {
	s.depth, s.routine, s.afterBegin, s.blocks, s.stop, s.done = 0, false, false, 0, false, false
	s.lex.unterminated = false
}

// next returns the statement's next token, or a tokEOF token at its end
// (the terminating semicolon, consumed, or the end of the input) or at the
// end of a segment of a BEGIN ATOMIC body.
func (s *scanner) next() token {
	if s.done || s.stop {
		return token{kind: tokEOF, start: s.lex.pos, end: s.lex.pos}
	}
	t := s.lex.next()
	afterBegin := s.afterBegin
	s.afterBegin = false
	switch t.kind {
	case tokEOF:
		s.done, s.end = true, t.start
	case tokPunct:
		switch s.lex.src[t.start] {
		case ';':
			if s.blocks == 0 {
				s.done, s.end = true, t.start
			} else {
				s.stop = true
			}
			return token{kind: tokEOF, start: t.start, end: t.start}
		case '(':
			s.depth++
		case ')':
			if s.depth > 0 {
				s.depth--
			}
		}
	case tokIdent:
		if s.routine && s.depth == 0 {
			switch s.kw(t) {
			case kwBegin:
				s.afterBegin = true
			case kwAtomic:
				if afterBegin {
					s.blocks++
				}
			case kwCase:
				if s.blocks > 0 {
					s.blocks++
				}
			case kwEnd:
				if s.blocks > 0 {
					s.blocks--
				}
			}
		}
	}
	return t
}

// peek returns the token next would return, without consuming it.
func (s *scanner) peek() token {
	save := *s
	t := s.next()
	*s = save
	return t
}

// drain consumes the rest of the statement, or of the segment of a BEGIN
// ATOMIC body being read.
func (s *scanner) drain() {
	for !s.done && !s.stop {
		s.next()
	}
}

// finish consumes the rest of the statement, every segment of it.
func (s *scanner) finish() {
	for !s.done {
		s.stop = false
		s.next()
	}
}

// incomplete reports whether the statement read so far ends inside an
// unterminated construct or an unclosed BEGIN ATOMIC body.
func (s *scanner) incomplete() bool {
	return s.lex.unterminated || s.blocks > 0
}

// text returns the source text of t.
func (s *scanner) text(t token) string { return s.lex.src[t.start:t.end] }

// kw returns the key word t spells, or kwNone if t is not an unquoted word
// or not a key word the classifier knows.
func (s *scanner) kw(t token) keyword {
	if t.kind != tokIdent {
		return kwNone
	}
	return lookupKeyword(s.lex.src[t.start:t.end])
}

// isPunct reports whether t is the punctuation character c.
func (s *scanner) isPunct(t token, c byte) bool {
	return t.kind == tokPunct && s.lex.src[t.start] == c
}
