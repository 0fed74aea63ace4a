package session

import "strconv"

// LSN is a position in PostgreSQL's write-ahead log, as the pg_lsn type
// holds it. Zero (0/0, InvalidXLogRecPtr) means none.
//
// https://www.postgresql.org/docs/15/datatype-pg-lsn.html
type LSN uint64

// String formats l as PostgreSQL does: two upper-case hexadecimal halves,
// "16/B374D848".
func (l LSN) String() string {
	b := make([]byte, 0, 17)
	return string(l.append(b))
}

// append appends l's text to b.
func (l LSN) append(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(l>>32), 16)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(uint32(l)), 16)
	for i := range b {
		if c := b[i]; c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b
}

// maxLSNHalf is the most hexadecimal digits pg_lsn accepts in each half.
const maxLSNHalf = 8

// ParseLSN parses s as PostgreSQL's pg_lsn input does: one to eight
// hexadecimal digits, a slash, one to eight more, and nothing else (no
// white space).
func ParseLSN(s string) (LSN, bool) {
	hi, rest, ok := hexHalf(s)
	if !ok || len(rest) == 0 || rest[0] != '/' {
		return 0, false
	}
	lo, rest, ok := hexHalf(rest[1:])
	if !ok || rest != "" {
		return 0, false
	}
	return LSN(hi<<32 | lo), true
}

// hexHalf reads one half of an LSN from the start of s.
func hexHalf(s string) (uint64, string, bool) {
	var v uint64
	n := 0
	for n < len(s) {
		c := s[n]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return v, s[n:], n > 0 && n <= maxLSNHalf
		}
		v = v<<4 | uint64(d)
		n++
		if n > maxLSNHalf {
			return 0, "", false
		}
	}
	return v, "", n > 0
}
