package session

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sluicedb/sluice/core/wire"
)

// errUnexpectedStatus reports one of Sluice's own exchanges that left the
// server in a transaction.
var errUnexpectedStatus = errors.New("server left a transaction open")

// The reject path answers a client with an ErrorResponse at any point of a
// batch, exactly as PostgreSQL answers a statement that fails there: the
// client sees the error in the position of the refused message, every
// later message up to Sync is skipped, and an open transaction is left
// failed.
//
// With no server connection held, the machine answers by itself. While one
// is held, replies to earlier messages may still be on their way, and the
// server's transaction must fail as well (or a later COMMIT would commit
// what the client believes failed): the refused message is replaced by a
// statement that makes the server raise the error itself, in its position.

// rejectLocally answers a refused message while no connection is held.
func (m *Machine) rejectLocally(typ byte, all int, e *wire.Error) Step {
	m.forgetDecision()
	out := e.Encode(m.cout[:0])
	switch typ {
	case wire.MsgQuery, wire.MsgFunctionCall, wire.MsgSync:
		out = wire.AppendReadyForQuery(out, wire.TxIdle)
	default:
		m.discarding = true
	}
	m.cout = out
	return Step{Skip: all, ToClient: out}
}

// rejectHeld replaces a refused message by one that makes the held server
// raise e in its place. out holds what must be written before it.
func (m *Machine) rejectHeld(typ byte, all int, out []byte, e *wire.Error) Step {
	m.busy.classValid, m.busy.pendDef = false, nil
	sql := raiseSQL(e)
	if typ == wire.MsgQuery || typ == wire.MsgFunctionCall {
		out = wire.AppendQuery(out, sql)
		m.busy.q.push(reply{kind: replySync, query: true})
		m.batch, m.held = false, false
	} else {
		// Parse, Bind and Execute of the unnamed statement: its
		// ParseComplete and BindComplete are Sluice's, the error is the
		// client's; the server then skips to the client's Sync.
		out = append(out, wire.MsgParse, 0, 0, 0, 0, 0)
		start := len(out) - 6
		out = append(out, sql...)
		out = append(out, 0, 0, 0)
		putLen(out[start+1:], len(out)-start-1)
		out = append(out, wire.MsgBind, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0)
		out = append(out, wire.MsgExecute, 0, 0, 0, 9, 0, 0, 0, 0, 0)
		m.srv.UnnamedKey = ""
		m.busy.q.push(reply{kind: replyParseSwallow, unnamed: true})
		m.busy.q.push(reply{kind: replyBindSwallow})
		m.batch, m.held = true, true
		m.discarding = true
	}
	m.out = out
	return Step{ToServer: out, Skip: all}
}

func putLen(b []byte, n int) {
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// raiseSQL returns a statement that fails with e's SQLSTATE and texts.
func raiseSQL(e *wire.Error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "DO $sluice$BEGIN RAISE EXCEPTION USING ERRCODE = %s, MESSAGE = %s",
		quoteInBody(e.Code), quoteInBody(e.Message))
	if e.Detail != "" {
		fmt.Fprintf(&b, ", DETAIL = %s", quoteInBody(e.Detail))
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, ", HINT = %s", quoteInBody(e.Hint))
	}
	b.WriteString("; END$sluice$")
	return b.String()
}

// quoteInBody quotes s as a literal inside the $sluice$ body, which ends at
// the first $sluice$ whatever quotes surround it: the tag is broken up.
func quoteInBody(s string) string {
	return wire.QuoteLiteral(strings.ReplaceAll(s, "$sluice$", "$ sluice$"))
}
