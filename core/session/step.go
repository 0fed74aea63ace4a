package session

import "github.com/sluicedb/sluice/core/wire"

// Need says what a machine needs before it can take the message offered.
type Need uint8

const (
	// NeedNothing: the message was taken (Step.Skip says how much of it is
	// not passed on).
	NeedNothing Need = iota
	// NeedServer: borrow a server connection for Step.Route, call Attach (or
	// Refuse when the borrow fails), then offer the same message again.
	NeedServer
	// NeedReplies: read the server and hand its messages to Server until
	// Expect reports no replies owed, then offer the same message again.
	NeedReplies
	// NeedDecision: call AskPolicy (anywhere, making no other call on the
	// machine until it returns), then offer the same message again before
	// anything else. Only a machine that defers its decisions
	// (DeferDecisions) asks for it.
	NeedDecision
)

// Release says what to do with the held server connection after a step.
type Release uint8

const (
	// Keep the connection.
	Keep Release = iota
	// ReleaseReturn gives the connection back to its pool: it is idle and
	// clean. The machine has already forgotten it.
	ReleaseReturn
	// ReleaseDiscard closes the connection.
	ReleaseDiscard
)

// Step is a machine's answer to one event. The engine writes ToServer to
// the server and ToClient to the client, then passes on the current message
// (to the other peer) except its first Skip bytes, header included; then it
// performs Release, and ends the session when End is set. ToServer and
// ToClient are valid until the next call on the machine.
type Step struct {
	Need     Need
	Route    Route // with NeedServer
	ToServer []byte
	ToClient []byte
	Skip     int
	Release  Release
	// Cancel asks for a cancel request to the held connection's backend
	// before it is released (a client left while its query runs).
	Cancel bool
	// End ends the session once ToClient is written; Err says why, for the
	// logs (its encoding is in ToClient when the client should see it).
	End bool
	Err *wire.Error
}

// Expect says what the server of a held connection may send next.
type Expect uint8

const (
	// ExpectNothing: the server has nothing to say until the client speaks
	// (or no connection is held).
	ExpectNothing Expect = iota
	// ExpectReplies: the server owes replies; read it.
	ExpectReplies
	// ExpectMaybe: the server may speak at any time (a notification to a
	// pinned idle client, results after a Flush) while the client may too:
	// wait for both.
	ExpectMaybe
)
