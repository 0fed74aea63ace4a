// Package session is one client's protocol logic as a state machine with no
// I/O: it consumes framed messages from the client and from the server
// connection it holds, and answers each with a Step that says what to write
// to whom and what to do (borrow a server connection, give it back, discard
// it, end the session). It has no goroutines, no locks and no blocking
// calls, so that any engine can drive it: today one goroutine per client
// (core/engine), later an event loop.
//
// The Machine composes one type per concern:
//
//   - replyQueue: the replies the server owes for what was sent to it, in
//     order, and what to do with each (forward, swallow, turn into another
//     reply, consume an exchange of Sluice's own);
//   - translator: protocol-level prepared statements in transaction mode,
//     kept per client and prepared under Sluice's names on whichever
//     connection the client borrows;
//   - params: the client's run-time parameters, synchronised onto each
//     borrowed connection and read back after a tracked SET;
//   - pinSet: why the client keeps its server connection;
//   - sluice.go: Sluice's own parameters (SET, RESET and SHOW of
//     sluice.min_lsn and sluice.last_lsn in simple queries, answered by
//     the machine, never sent to PostgreSQL); lsn.go: read-your-writes: with
//     Config.RecordLSN, after a commit that wrote, the writer's WAL insert
//     position is read on the same connection (an exchange of Sluice's
//     own, after the client has its ReadyForQuery and before the
//     connection goes back), and every later borrow carries the larger of
//     it and sluice.min_lsn in Route.MinLSN.
//
// # Transfer point
//
// In transaction mode a client borrows a server connection at the first
// message that needs one and gives it back when the server reports
// ReadyForQuery with status 'I', nothing the client sent is unanswered, no
// extended-protocol batch is open, no pin holds and no parameter read-back
// is due: the safe transfer point. In session mode it keeps the connection.
//
// # Seams
//
// Later work plugs in here without restructuring the machine:
//
//   - Policy.Decide is asked for every statement before it is forwarded,
//     and, when the client holds no server connection, before the borrow:
//     its Route (the role or cluster the borrow asks the topology for) is
//     what Step.Route carries with NeedServer. DefaultPolicy sends every
//     transaction to the listener's default role; SplitPolicy sends what
//     certainly only reads to the replicas and the rest to the writer.
//   - The same Decision can change the pin decision the classifier made
//     (PinKeep, PinForce with a reason, PinNever) and reject the statement:
//     the machine then answers the client with an ErrorResponse at any point
//     of a batch, exactly as PostgreSQL answers a failed statement (see
//     reject.go), or rewrite its text (Decision.Rewrite: a simple Query's
//     text or a Parse's query; the new text's classification decides
//     session effects).
//   - Machine.SetPolicy gives one session its own Policy (the filters'
//     per-session chain, from the engine's StartSession).
//   - The engine resolves a Route to a pool (the topology seam): the machine
//     never knows endpoints.
package session
