package session

import (
	"bytes"
	"strconv"

	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

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

// Recording commit positions (Config.RecordLSN): which requests write,
// whether they committed, and the query that reads the position.

// lsnQuery reads the writer's WAL position after a commit. The insert
// position, not pg_current_wal_lsn's write position: with
// synchronous_commit off, a commit returns before its record is written,
// and a replica that has replayed up to the write position may not have
// replayed the commit yet. Every record inserted before the query, the
// client's commit among them, ends at or before it.
const lsnQuery = "SELECT pg_catalog.pg_current_wal_insert_lsn()"

// writes reports whether a statement may write what a later read of the
// client must see: it is not read-only, and not one of the commands that
// only open or end a transaction or change the session.
func writes(st *sqlclass.Statement) bool {
	if st.ReadOnly {
		return false
	}
	switch st.Command {
	case "BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
		"SET", "RESET", "SHOW", "DEALLOCATE", "DISCARD", "LISTEN", "UNLISTEN", "FETCH", "MOVE", "CLOSE":
		return false
	}
	return true
}

// anyWrites reports whether one of a simple Query's statements writes.
func anyWrites(class []sqlclass.Statement) bool {
	for i := range class {
		if writes(&class[i]) {
			return true
		}
	}
	return false
}

// noteTag looks at a CommandComplete of the request being answered: a
// COMMIT tag means its transaction committed (a COMMIT of a failed
// transaction is tagged ROLLBACK).
func (m *Machine) noteTag(body []byte) {
	tag, _, _ := bytes.Cut(body, []byte{0})
	switch string(tag) {
	case "COMMIT", "COMMIT PREPARED":
		m.sawCommit = true
	case "ROLLBACK":
		m.sawRollback = true
	}
}

// requestEnded takes the end of one request (r, its ReadyForQuery): the
// transaction status was prev before it and is status after it. A request
// that wrote and committed (a COMMIT; or, in autocommit, no error and no
// ROLLBACK) makes the writer's position due for recording; a transaction
// that ends without a COMMIT undoes a SET sluice.min_lsn made inside it.
func (m *Machine) requestEnded(r *reply, prev, status byte) {
	committed := m.sawCommit || prev == wire.TxIdle && status == wire.TxIdle && !m.reqErr && !m.sawRollback
	if m.record {
		m.txWrote = m.txWrote || r.writes
		if m.txWrote && committed {
			m.lsnDue = true
		}
		if status == wire.TxIdle || m.sawCommit { // COMMIT AND CHAIN starts afresh
			m.txWrote = false
		}
	}
	if m.minInTx && (m.sawCommit || status == wire.TxIdle) {
		if !m.sawCommit {
			m.minLSN = m.busy.minBefore
		}
		m.minInTx = false
	}
	m.sawCommit, m.sawRollback, m.reqErr = false, false, false
}

// MinLSN returns the client's SET sluice.min_lsn, or zero.
func (m *Machine) MinLSN() LSN { return m.minLSN }

// LastLSN returns the writer's WAL position recorded after the client's
// last commit that wrote, or zero.
func (m *Machine) LastLSN() LSN { return m.lastLSN }
