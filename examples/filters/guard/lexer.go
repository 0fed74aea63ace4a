package main

import "strings"

// tokKind is the kind of a token.
type tokKind uint8

const (
	tokEOF    tokKind = iota
	tokWord           // a key word or an unquoted identifier
	tokQuoted         // a quoted identifier: "..." or U&"..."
	tokString         // a constant: '...', E'...', B'...', X'...', N'...', U&'...', $tag$...$tag$
	tokNumber         // a numeric constant
	tokParam          // a parameter: $1
	tokPunct          // one byte of anything else: ( ) ; , . * = ...
)

// token is a span of the text, src[start:end].
type token struct {
	kind       tokKind
	start, end int
}

// lexer splits SQL text into tokens, skipping white space and comments
// (-- to the end of the line, and /* */, which nest). It follows
// PostgreSQL's lexical rules closely enough to tell code from strings,
// quoted identifiers and comments
// (https://www.postgresql.org/docs/current/sql-syntax-lexical.html), with
// standard_conforming_strings on: a backslash escapes only in E'...'. It
// never fails and never allocates: text that ends inside a string or a
// comment ends the token there. Its time is linear in the text.
type lexer struct {
	src string
	pos int
}

// next returns the next token, of kind tokEOF at the end.
func (l *lexer) next() token {
	src := l.src
	for l.pos < len(src) {
		switch c := src[l.pos]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.pos++
		case c == '-' && l.at(l.pos+1) == '-':
			if i := strings.IndexByte(src[l.pos:], '\n'); i >= 0 {
				l.pos += i + 1
			} else {
				l.pos = len(src)
			}
		case c == '/' && l.at(l.pos+1) == '*':
			l.pos = skipComment(src, l.pos)
		default:
			return l.scan()
		}
	}
	return token{kind: tokEOF, start: len(src), end: len(src)}
}

// at returns the byte at i, or 0 past the end.
func (l *lexer) at(i int) byte {
	if i < len(l.src) {
		return l.src[i]
	}
	return 0
}

// scan reads the token that starts at l.pos, which is not white space or
// a comment.
func (l *lexer) scan() token {
	src, start := l.src, l.pos
	kind := tokPunct
	end := start + 1
	switch c := src[start]; {
	case c == '\'':
		kind, end = tokString, closeQuote(src, start+1, '\'', false)
	case c == '"':
		kind, end = tokQuoted, closeQuote(src, start+1, '"', false)
	case c == '$':
		if isDigit(l.at(start + 1)) {
			kind, end = tokParam, start+1
			for end < len(src) && isDigit(src[end]) {
				end++
			}
		} else if e, ok := dollarQuote(src, start); ok {
			kind, end = tokString, e
		}
	case isDigit(c) || c == '.' && isDigit(l.at(start+1)):
		kind, end = tokNumber, start
		for end < len(src) {
			ch := src[end]
			if (ch == 'e' || ch == 'E') && (l.at(end+1) == '+' || l.at(end+1) == '-') {
				end += 2
			} else if isIdentStart(ch) || isDigit(ch) || ch == '.' {
				end++
			} else {
				break
			}
		}
	case isIdentStart(c):
		kind, end = tokWord, start+1
		for end < len(src) && isIdentChar(src[end]) {
			end++
		}
		if end == start+1 { // a one-letter word may prefix a string: E'...', U&'...'
			switch next := l.at(end); {
			case next == '\'' && (c == 'e' || c == 'E'):
				kind, end = tokString, closeQuote(src, end+1, '\'', true)
			case next == '\'' && strings.IndexByte("bBxXnN", c) >= 0:
				kind, end = tokString, closeQuote(src, end+1, '\'', false)
			case next == '&' && (c == 'u' || c == 'U') && l.at(end+1) == '\'':
				kind, end = tokString, closeQuote(src, end+2, '\'', false)
			case next == '&' && (c == 'u' || c == 'U') && l.at(end+1) == '"':
				kind, end = tokQuoted, closeQuote(src, end+2, '"', false)
			}
		}
	}
	l.pos = end
	return token{kind: kind, start: start, end: end}
}

// closeQuote returns the index just after the quote q that closes the
// string or identifier whose text starts at i; a doubled quote stands for
// itself and, with backslash, a backslash escapes the next byte.
//
// It looks for quotes with strings.IndexByte rather than byte by byte: in
// Sluice's host a loop of Go code costs tens of nanoseconds an iteration
// (see README.md), the standard library's searches much less.
func closeQuote(src string, i int, q byte, backslash bool) int {
	for i < len(src) {
		j := strings.IndexByte(src[i:], q)
		if j < 0 {
			return len(src)
		}
		j += i
		if backslash && escaped(src, i, j) {
			i = j + 1
			continue
		}
		if j+1 < len(src) && src[j+1] == q {
			i = j + 2
			continue
		}
		return j + 1
	}
	return len(src)
}

// escaped reports whether the byte at j follows an odd number of
// backslashes that start at or after i.
func escaped(src string, i, j int) bool {
	n := 0
	for k := j - 1; k >= i && src[k] == '\\'; k-- {
		n++
	}
	return n%2 == 1
}

// dollarQuote returns the index just after the dollar-quoted string that
// starts at src[i] == '$' ($$...$$ or $tag$...$tag$), and false when
// there is none there.
func dollarQuote(src string, i int) (int, bool) {
	j := i + 1
	for j < len(src) && src[j] != '$' {
		if !isIdentChar(src[j]) || j == i+1 && isDigit(src[j]) {
			return 0, false
		}
		j++
	}
	if j >= len(src) {
		return 0, false
	}
	tag := src[i : j+1]
	if k := strings.Index(src[j+1:], tag); k >= 0 {
		return j + 1 + k + len(tag), true
	}
	return len(src), true
}

// skipComment returns the index just after the /* */ comment, nested
// comments included, that starts at i.
func skipComment(src string, i int) int {
	depth := 1
	for i += 2; i < len(src); {
		j := strings.IndexByte(src[i:], '*')
		if j < 0 {
			return len(src)
		}
		j += i
		switch {
		case j > i && src[j-1] == '/': // a nested /*
			depth++
			i = j + 1
		case j+1 < len(src) && src[j+1] == '/':
			if depth--; depth == 0 {
				return j + 2
			}
			i = j + 2
		default:
			i = j + 1
		}
	}
	return len(src)
}

// is reports whether t is the key word kw, given in lower case, in any
// case. Only ASCII letters fold, as in PostgreSQL's key words
// (strings.EqualFold would also take "ſ" for "s").
func (l *lexer) is(t token, kw string) bool {
	if t.kind != tokWord || t.end-t.start != len(kw) {
		return false
	}
	for i := 0; i < len(kw); i++ {
		c := l.src[t.start+i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != kw[i] {
			return false
		}
	}
	return true
}

// punct reports whether t is the punctuation c.
func (l *lexer) punct(t token, c byte) bool {
	return t.kind == tokPunct && l.src[t.start] == c
}

// isName reports whether t can name a table or column.
func isName(t token) bool { return t.kind == tokWord || t.kind == tokQuoted }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isIdentStart reports whether an identifier may start with c: a letter,
// an underscore or any byte of a non-ASCII character.
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }
