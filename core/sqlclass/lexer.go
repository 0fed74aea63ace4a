package sqlclass

import "strings"

// tokenKind is the kind of a lexical token.
type tokenKind uint8

const (
	tokEOF    tokenKind = iota // end of input
	tokIdent                   // unquoted identifier or key word
	tokQIdent                  // quoted identifier: "..." or U&"..."
	tokString                  // any string constant: '...', E'...', B'...', X'...', N'...', U&'...', $tag$...$tag$
	tokNumber                  // numeric constant
	tokParam                   // positional parameter: $1
	tokPunct                   // one character of punctuation or of an operator
)

// token is one lexical token: its kind and its byte span in the input.
type token struct {
	kind       tokenKind
	start, end int
}

// lexer splits SQL text into tokens following the lexical rules of
// PostgreSQL 15 with standard_conforming_strings on: white space and
// comments (-- to the end of the line, and /* */ which nest) are skipped,
// and strings, quoted identifiers and dollar quotes are single tokens. A
// construct left open at the end of the input runs to the end and sets
// unterminated. It never fails and always advances.
//
// https://www.postgresql.org/docs/15/sql-syntax-lexical.html
type lexer struct {
	src string
	pos int
	// unterminated is set when a comment, string, quoted identifier or
	// dollar quote is still open at the end of the input.
	unterminated bool
}

// next returns the next token, or tokEOF at the end of the input.
func (l *lexer) next() token {
	l.skipSpace()
	src := l.src
	start := l.pos
	if start >= len(src) {
		return token{kind: tokEOF, start: len(src), end: len(src)}
	}
	c := src[start]
	switch {
	case c == '\'':
		l.pos = l.quoted(start+1, '\'')
		return token{kind: tokString, start: start, end: l.pos}
	case c == '"':
		l.pos = l.quoted(start+1, '"')
		return token{kind: tokQIdent, start: start, end: l.pos}
	case c == '$':
		return l.dollar(start)
	case isDigit(c) || c == '.' && start+1 < len(src) && isDigit(src[start+1]):
		l.pos = l.number(start)
		return token{kind: tokNumber, start: start, end: l.pos}
	case isIdentStart(c):
		// Prefixed string constants and quoted identifiers, only at the start
		// of a token: E'', N'', B'', X'', U&'', U&"".
		if start+1 < len(src) && src[start+1] == '\'' {
			switch c {
			case 'e', 'E':
				l.pos = l.escapeString(start + 2)
				return token{kind: tokString, start: start, end: l.pos}
			case 'n', 'N':
				l.pos = l.quoted(start+2, '\'')
				return token{kind: tokString, start: start, end: l.pos}
			case 'b', 'B', 'x', 'X':
				l.pos = l.quoted(start+2, '\'')
				return token{kind: tokString, start: start, end: l.pos}
			}
		}
		if (c == 'u' || c == 'U') && start+2 < len(src) && src[start+1] == '&' {
			switch src[start+2] {
			case '\'':
				l.pos = l.quoted(start+3, '\'')
				return token{kind: tokString, start: start, end: l.pos}
			case '"':
				l.pos = l.quoted(start+3, '"')
				return token{kind: tokQIdent, start: start, end: l.pos}
			}
		}
		i := start + 1
		for i < len(src) && isIdentCont(src[i]) {
			i++
		}
		l.pos = i
		return token{kind: tokIdent, start: start, end: i}
	}
	l.pos = start + 1
	return token{kind: tokPunct, start: start, end: start + 1}
}

// skipSpace skips white space and comments.
func (l *lexer) skipSpace() {
	src := l.src
	i := l.pos
	for i < len(src) {
		switch c := src[i]; c {
		case ' ', '\t', '\n', '\r', '\f', '\v':
			i++
		case '-':
			if i+1 >= len(src) || src[i+1] != '-' {
				l.pos = i
				return
			}
			j := strings.IndexAny(src[i+2:], "\n\r")
			if j < 0 {
				i = len(src) // a line comment may end the input
			} else {
				i += 2 + j + 1
			}
		case '/':
			if i+1 >= len(src) || src[i+1] != '*' {
				l.pos = i
				return
			}
			i = l.blockComment(i + 2)
		default:
			l.pos = i
			return
		}
	}
	l.pos = i
}

// blockComment skips a block comment whose "/*" ends just before i, with
// nested comments, and returns the offset after its "*/".
func (l *lexer) blockComment(i int) int {
	src := l.src
	depth := 1
	for i < len(src) {
		j := strings.IndexAny(src[i:], "*/")
		if j < 0 {
			break
		}
		i += j
		if i+1 < len(src) {
			if src[i] == '*' && src[i+1] == '/' {
				depth--
				i += 2
				if depth == 0 {
					return i
				}
				continue
			}
			if src[i] == '/' && src[i+1] == '*' {
				depth++
				i += 2
				continue
			}
		}
		i++
	}
	l.unterminated = true
	return len(src)
}

// quoted skips the body of a standard string constant (q is ') or of a
// quoted identifier (q is "), whose opening quote ends just before i, and
// returns the offset after its closing quote. Inside, the quote character
// is written twice; a backslash is an ordinary character.
func (l *lexer) quoted(i int, q byte) int {
	src := l.src
	for {
		// Most quoted text is short: a plain loop beats IndexByte's call.
		j := -1
		for k := i; k < len(src) && k < i+shortScan; k++ {
			if src[k] == q {
				j = k - i
				break
			}
		}
		if j < 0 && i+shortScan < len(src) {
			if j = strings.IndexByte(src[i+shortScan:], q); j >= 0 {
				j += shortScan
			}
		}
		if j < 0 {
			l.unterminated = true
			return len(src)
		}
		i += j + 1
		if i < len(src) && src[i] == q {
			i++ // a doubled quote stands for one
			continue
		}
		return i
	}
}

// shortScan is how far quoted looks with a plain loop before it calls
// strings.IndexByte.
const shortScan = 24

// escapeString skips the body of an escape string constant (E'...'), in
// which a backslash escapes the next character and a quote may also be
// written twice, and returns the offset after its closing quote.
func (l *lexer) escapeString(i int) int {
	src := l.src
	for i < len(src) {
		switch src[i] {
		case '\\':
			i += 2
			continue
		case '\'':
			if i+1 < len(src) && src[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	l.unterminated = true
	return len(src)
}

// number returns the end of the numeric constant at start: digits, a
// fraction, an exponent. Like PostgreSQL before version 15, it stops before
// anything else, so that 1E'...' is a number and an escape string (version
// 15 refuses such trailing junk).
func (l *lexer) number(start int) int {
	src := l.src
	i := start
	for i < len(src) && isDigit(src[i]) {
		i++
	}
	if i < len(src) && src[i] == '.' && (i+1 >= len(src) || src[i+1] != '.') {
		i++
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	if i < len(src) && src[i]|0x20 == 'e' {
		j := i + 1
		if j < len(src) && (src[j] == '+' || src[j] == '-') {
			j++
		}
		if j < len(src) && isDigit(src[j]) {
			for j < len(src) && isDigit(src[j]) {
				j++
			}
			i = j
		}
	}
	return i
}

// dollar lexes what starts with a '$' at start: a positional parameter
// ($1), a dollar-quoted string ($$...$$, $tag$...$tag$) or a lone '$'.
func (l *lexer) dollar(start int) token {
	src := l.src
	i := start + 1
	if i < len(src) && isDigit(src[i]) {
		for i < len(src) && isDigit(src[i]) {
			i++
		}
		l.pos = i
		return token{kind: tokParam, start: start, end: i}
	}
	// The tag follows the rules of an unquoted identifier, without '$'.
	if i < len(src) && isIdentStart(src[i]) {
		i++
		for i < len(src) && isIdentCont(src[i]) && src[i] != '$' {
			i++
		}
	}
	if i >= len(src) || src[i] != '$' {
		l.pos = start + 1
		return token{kind: tokPunct, start: start, end: start + 1}
	}
	delim := src[start : i+1]
	body := i + 1
	j := strings.Index(src[body:], delim)
	if j < 0 {
		l.unterminated = true
		l.pos = len(src)
	} else {
		l.pos = body + j + len(delim)
	}
	return token{kind: tokString, start: start, end: l.pos}
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// isIdentStart reports whether c may start an unquoted identifier: a
// letter, an underscore or any byte of a multi-byte UTF-8 character.
func isIdentStart(c byte) bool { return isLetter(c) || c == '_' || c >= 0x80 }

// isIdentCont reports whether c may continue an unquoted identifier.
func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }
