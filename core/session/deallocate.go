package session

import (
	"bytes"
	"strings"

	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// deallocate reports whether a simple Query (whole body) is exactly
// `DEALLOCATE [PREPARE] name` for one of the client's protocol-level
// statements, which the server knows only under Sluice's name, and the
// machine can answer it by itself: nothing is owed by the server and the
// transaction has not failed (PostgreSQL would refuse the statement then).
// It then forgets the statement. psycopg 3 evicts its statements this way.
func (m *Machine) deallocate(body []byte) bool {
	name, ok := m.deallocates(body)
	if ok {
		delete(m.stmts.prepared, name)
	}
	return ok
}

// deallocatable reports whether deallocate would answer body, changing
// nothing.
func (m *Machine) deallocatable(body []byte) bool {
	_, ok := m.deallocates(body)
	return ok
}

// deallocates is what deallocate decides: the statement it forgets, if it
// answers body.
func (m *Machine) deallocates(body []byte) (string, bool) {
	if m.cfg.Mode != ModeTransaction || len(body) > 256 || len(m.stmts.prepared) == 0 {
		return "", false
	}
	name, ok := deallocateName(body)
	if !ok {
		return "", false
	}
	if _, known := m.stmts.prepared[name]; !known {
		return "", false
	}
	if m.srv != nil && (m.busy.q.requests > 0 || m.batch || m.tx == wire.TxFailed) {
		return "", false
	}
	return name, true
}

// deallocated answers a DEALLOCATE as PostgreSQL would.
func (m *Machine) deallocated(all int) Step {
	m.forgetDecision() // answered here: nothing kept for the message
	status := byte(wire.TxIdle)
	if m.srv != nil {
		status = m.tx
	}
	out := wire.AppendMessage(m.cout[:0], wire.MsgCommandComplete, []byte("DEALLOCATE\x00"))
	m.cout = wire.AppendReadyForQuery(out, status)
	return Step{Skip: all, ToClient: m.cout}
}

// deallocateName returns the statement name of a Query body that holds
// only `DEALLOCATE [PREPARE] name`, with optional white space and a final
// semicolon.
func deallocateName(body []byte) (string, bool) {
	text, _, ok := bytes.Cut(body, []byte{0})
	if !ok {
		return "", false
	}
	if t := bytes.TrimLeft(text, " \t\r\n"); len(t) < 10 || !bytes.EqualFold(t[:10], []byte("deallocate")) {
		return "", false // the common case, without a copy
	}
	st := sqlclass.ClassifyOne(string(text))
	if st.Command != "DEALLOCATE" || st.Effects != nil {
		return "", false
	}
	words := strings.Fields(strings.TrimSuffix(strings.TrimSpace(string(text)), ";"))
	if len(words) == 3 && strings.EqualFold(words[1], "PREPARE") {
		words = []string{words[0], words[2]}
	}
	if len(words) != 2 || !strings.EqualFold(words[0], "DEALLOCATE") {
		return "", false
	}
	name := words[1]
	if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
		name = strings.ReplaceAll(name[1:len(name)-1], `""`, `"`)
	} else {
		if strings.ContainsAny(name, `"'$;()`) || strings.EqualFold(name, "ALL") {
			return "", false
		}
		name = strings.ToLower(name)
	}
	return name, true
}
