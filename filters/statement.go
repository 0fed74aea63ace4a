package filters

import (
	"strings"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
)

// NewStatement returns the statement a proxy session hands its policy for
// sql, sent as a simple Query or, when extended, as the query of a Parse:
// classified as the session classifies it (a Parse holds one statement),
// and a Borrow unless a transaction holds a server connection. It is for
// tools and tests that run a filter outside a proxy.
func NewStatement(sql string, inTx, extended bool) session.Statement {
	st := session.Statement{SQL: sql, Extended: extended, InTransaction: inTx, Borrow: !inTx}
	if extended {
		st.Class = []sqlclass.Statement{sqlclass.ClassifyOne(sql)}
	} else {
		st.Class = sqlclass.Classify(nil, sql)
	}
	return st
}

// InTransactionAfter reports whether a session is in a transaction block
// after sql has run without error, given whether it was in one before. A
// proxy learns it from the server; this follows the statements' commands
// instead: BEGIN and START TRANSACTION open a block, COMMIT, END,
// ROLLBACK, ABORT and PREPARE TRANSACTION close it, except ROLLBACK TO
// SAVEPOINT and COMMIT or ROLLBACK AND CHAIN. It is for tools and tests
// that run a filter outside a proxy.
func InTransactionAfter(sql string, inTx bool) bool {
	spans := sqlclass.Split(nil, sql)
	for i, st := range sqlclass.Classify(nil, sql) {
		switch st.Command {
		case "BEGIN", "START TRANSACTION":
			inTx = true
		case "COMMIT", "ROLLBACK":
			inTx = inTx && staysInTransaction(sql[spans[i].Start:spans[i].End])
		case "PREPARE TRANSACTION":
			inTx = false
		}
	}
	return inTx
}

// staysInTransaction reports whether a COMMIT or ROLLBACK statement leaves
// a transaction block open: ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT]
// name, or ... AND CHAIN (not AND NO CHAIN). Comments before the
// statement are skipped; comments inside it are not expected.
func staysInTransaction(stmt string) bool {
	words := strings.Fields(strings.ToUpper(sqlclass.TrimLeft(stmt)))
	for _, w := range words {
		if w == "TO" {
			return true
		}
	}
	n := len(words)
	return n >= 2 && words[n-2] == "AND" && words[n-1] == "CHAIN"
}
