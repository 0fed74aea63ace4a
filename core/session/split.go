package session

import "github.com/sluicedb/sluice/core/sqlclass"

// SplitPolicy is the Policy of a listener with role = "split": a borrow
// for what certainly only reads goes to the replicas, every other to the
// writer. What only reads is judged at the borrow, from the message that
// needs the connection: a simple Query all of whose statements the
// classifier finds read-only (sqlclass.Statement.ReadOnly: no unknown
// function, no locking clause, no nextval), or that opens a READ ONLY
// transaction, in which the server refuses writes as the writer would;
// the Bind (or Parse) of such a statement. A plain BEGIN goes to the
// writer, since what follows it is not known yet. Inside a transaction,
// and for a pinned client, the server is already chosen and the policy's
// route is not used. It keeps the classifier's pin decisions.
type SplitPolicy struct{}

var _ Policy = SplitPolicy{}

// Decide implements Policy.
func (SplitPolicy) Decide(st *Statement) Decision {
	if st.Borrow && readsOnly(st.Class) {
		return Decision{Route: Route{Role: RoleReplica}}
	}
	return Decision{Route: Route{Role: RoleWriter}}
}

// readsOnly reports whether the statements of one message only read: each
// is read-only, but inside a READ ONLY transaction they opened, where the
// server refuses any write. After the COMMIT or ROLLBACK that ends it (or
// a ROLLBACK TO, which the classifier does not tell apart: stricter, never
// wrong) each must be read-only again.
func readsOnly(class []sqlclass.Statement) bool {
	if len(class) == 0 {
		return false
	}
	inReadOnly := false
	for i := range class {
		c := &class[i]
		switch {
		case inReadOnly && (c.Command == "COMMIT" || c.Command == "ROLLBACK"):
			inReadOnly = false
		case inReadOnly:
		case !c.ReadOnly:
			return false
		case c.Command == "BEGIN" || c.Command == "START TRANSACTION":
			inReadOnly = true
		}
	}
	return true
}
