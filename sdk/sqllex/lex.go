// Package sqllex splits PostgreSQL SQL text into tokens for filters: it
// tells code from strings, quoted identifiers and comments without
// allocating, so that a filter can look for key words and function calls
// where they really are. It builds for wasip1 like the rest of the SDK.
package sqllex

import "strings"

// Kind is the kind of a Token.
type Kind uint8

const (
	EOF    Kind = iota
	Word        // a key word or an unquoted identifier
	Quoted      // a quoted identifier: "..." or U&"..."
	String      // a constant: '...', E'...', B'...', X'...', N'...', U&'...', $tag$...$tag$
	Number      // a numeric constant
	Param       // a parameter: $1
	Punct       // one byte of anything else: ( ) ; , . * = ...
)

// Token is a span of the text, Src[Start:End].
type Token struct {
	Kind       Kind
	Start, End int
}

// Lexer splits SQL text into tokens, skipping white space and comments
// (-- to the end of the line, and /* */, which nest). It follows
// PostgreSQL's lexical rules closely enough to tell code from strings,
// quoted identifiers and comments
// (https://www.postgresql.org/docs/current/sql-syntax-lexical.html), with
// standard_conforming_strings on: a backslash escapes only in E'...'. It
// never fails and never allocates: text that ends inside a string or a
// comment ends the Token there. Its time is linear in the text.
type Lexer struct {
	Src string // the text
	Pos int    // where the next token is looked for
}

// Next returns the next Token, of kind EOF at the end.
func (l *Lexer) Next() Token {
	src := l.Src
	for l.Pos < len(src) {
		switch c := src[l.Pos]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.Pos++
		case c == '-' && l.at(l.Pos+1) == '-':
			if i := strings.IndexByte(src[l.Pos:], '\n'); i >= 0 {
				l.Pos += i + 1
			} else {
				l.Pos = len(src)
			}
		case c == '/' && l.at(l.Pos+1) == '*':
			l.Pos = skipComment(src, l.Pos)
		default:
			return l.scan()
		}
	}
	return Token{Kind: EOF, Start: len(src), End: len(src)}
}

// at returns the byte at i, or 0 past the end.
func (l *Lexer) at(i int) byte {
	if i < len(l.Src) {
		return l.Src[i]
	}
	return 0
}

// scan reads the Token that starts at l.Pos, which is not white space or
// a comment.
func (l *Lexer) scan() Token {
	src, start := l.Src, l.Pos
	kind := Punct
	end := start + 1
	switch c := src[start]; {
	case c == '\'':
		kind, end = String, closeQuote(src, start+1, '\'', false)
	case c == '"':
		kind, end = Quoted, closeQuote(src, start+1, '"', false)
	case c == '$':
		if IsDigit(l.at(start + 1)) {
			kind, end = Param, start+1
			for end < len(src) && IsDigit(src[end]) {
				end++
			}
		} else if e, ok := dollarQuote(src, start); ok {
			kind, end = String, e
		}
	case IsDigit(c) || c == '.' && IsDigit(l.at(start+1)):
		kind, end = Number, start
		for end < len(src) {
			ch := src[end]
			if (ch == 'e' || ch == 'E') && (l.at(end+1) == '+' || l.at(end+1) == '-') {
				end += 2
			} else if IsIdentStart(ch) || IsDigit(ch) || ch == '.' {
				end++
			} else {
				break
			}
		}
	case IsIdentStart(c):
		kind, end = Word, start+1
		for end < len(src) && IsIdentChar(src[end]) {
			end++
		}
		if end == start+1 { // a one-letter word may prefix a string: E'...', U&'...'
			switch next := l.at(end); {
			case next == '\'' && (c == 'e' || c == 'E'):
				kind, end = String, closeQuote(src, end+1, '\'', true)
			case next == '\'' && strings.IndexByte("bBxXnN", c) >= 0:
				kind, end = String, closeQuote(src, end+1, '\'', false)
			case next == '&' && (c == 'u' || c == 'U') && l.at(end+1) == '\'':
				kind, end = String, closeQuote(src, end+2, '\'', false)
			case next == '&' && (c == 'u' || c == 'U') && l.at(end+1) == '"':
				kind, end = Quoted, closeQuote(src, end+2, '"', false)
			}
		}
	}
	l.Pos = end
	return Token{Kind: kind, Start: start, End: end}
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
		if !IsIdentChar(src[j]) || j == i+1 && IsDigit(src[j]) {
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

// Is reports whether t is the key word kw, given in lower case, in any
// case. Only ASCII letters fold, as in PostgreSQL's key words
// (strings.EqualFold would also take "ſ" for "s").
func (l *Lexer) Is(t Token, kw string) bool {
	if t.Kind != Word || t.End-t.Start != len(kw) {
		return false
	}
	for i := 0; i < len(kw); i++ {
		c := l.Src[t.Start+i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != kw[i] {
			return false
		}
	}
	return true
}

// IsPunct reports whether t is the punctuation c.
func (l *Lexer) IsPunct(t Token, c byte) bool {
	return t.Kind == Punct && l.Src[t.Start] == c
}

// IsName reports whether t can name a table or column.
func IsName(t Token) bool { return t.Kind == Word || t.Kind == Quoted }

// IsDigit reports whether c is a decimal digit.
func IsDigit(c byte) bool { return '0' <= c && c <= '9' }

// IsIdentStart reports whether an identifier may start with c: a letter,
// an underscore or any byte of a non-ASCII character.
func IsIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func IsIdentChar(c byte) bool { return IsIdentStart(c) || IsDigit(c) || c == '$' }
