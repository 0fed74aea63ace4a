package session

import (
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// Role is the kind of server a transaction is sent to.
type Role uint8

// The roles a route may name.
const (
	// RoleDefault is the listener's role: the writer, or the replicas for
	// a reader listener.
	RoleDefault Role = iota
	// RoleWriter is the cluster's primary.
	RoleWriter
	// RoleReplica is any healthy replica of the cluster.
	RoleReplica
)

func (r Role) String() string {
	switch r {
	case RoleWriter:
		return "writer"
	case RoleReplica:
		return "replica"
	}
	return "default"
}

// Route says where a borrow goes: a role of the session's cluster, or of
// the cluster named by Cluster when it is set. The zero Route is the
// listener's default.
type Route struct {
	Role    Role
	Cluster string
	// MinLSN, when not zero, is the WAL position a replica must have
	// replayed to serve this borrow: the client's last commit with
	// read-your-writes, or what it asked for with SET sluice.min_lsn. The
	// machine fills it in at every borrow; a borrow that ends up on the
	// writer ignores it.
	MinLSN LSN
}

// PinDecision overrides the pin decision the classifier made.
type PinDecision uint8

// The pin decisions a Policy may return.
const (
	// PinKeep keeps the classifier's decision.
	PinKeep PinDecision = iota
	// PinForce pins the session with Decision.PinReason.
	PinForce
	// PinNever does not pin for this statement, whatever the classifier says.
	PinNever
)

// Statement is what a Policy sees of one statement.
type Statement struct {
	// SQL is the statement's text: a simple Query's whole text, or the query
	// of the prepared statement a Parse or Bind names.
	SQL string
	// Class is the classifier's verdict, one entry per statement of a
	// simple Query.
	Class []sqlclass.Statement
	// Extended reports the extended protocol (Parse or Bind).
	Extended bool
	// InTransaction reports an open transaction: the server is then fixed,
	// and a Route is ignored.
	InTransaction bool
	// Borrow reports that the client holds no server connection: the Route
	// chooses where the borrow goes.
	Borrow bool
}

// Decision is a Policy's answer for one statement.
type Decision struct {
	Route     Route
	Reject    *wire.Error // answer the client with this error instead
	Pin       PinDecision
	PinReason string // with PinForce
	// Rewrite, when not empty, replaces the statement's text: a simple
	// Query's whole text, or a Parse's query (its parameter types stay).
	// The classifier's verdict on the new text decides session-state
	// effects. It applies where the message is sent to the server.
	Rewrite string
}

// Policy decides, per statement, where it goes, whether it is refused and
// whether it pins. It is called only in transaction mode, by the machine
// itself or, when the machine defers its decisions (DeferDecisions), by
// its engine through AskPolicy: the event-loop engine asks a filter chain
// on a worker goroutine, never on the loop. Either way one session's
// calls never overlap. st, and what it refers to, is valid only during
// the call: the machine reuses it for other statements and other
// sessions.
type Policy interface {
	Decide(st *Statement) Decision
}

// DefaultPolicy routes everything to the listener's default role and keeps the classifier's
// pin decisions.
type DefaultPolicy struct{}

// Decide implements Policy.
func (DefaultPolicy) Decide(*Statement) Decision { return Decision{} }
