package session

// replyKind says what to do with one reply the server owes.
type replyKind uint8

const (
	// replySync: the ReadyForQuery that ends a client's Sync, Query or
	// FunctionCall; forwarded.
	replySync         replyKind = iota + 1
	replyParse                  // forward ParseComplete
	replyParseSwallow           // swallow the ParseComplete of a Parse Sluice added
	replyBindSwallow            // swallow the BindComplete of a Bind Sluice added
	replyClose                  // forward CloseComplete
	replyCloseAsParse           // send CloseComplete on as ParseComplete
	replyCloseSwallow           // swallow the CloseComplete of a Close Sluice added
	// replyInternal: a simple query of Sluice's own; every reply up to and
	// including its ReadyForQuery is consumed by the machine.
	replyInternal
)

// internalPurpose says what a replyInternal exchange is for.
type internalPurpose uint8

const (
	internalLogin    internalPurpose = iota + 1 // apply and validate startup parameters at login
	internalSync                                // bring a borrowed connection's parameters in line
	internalReadBack                            // read back tracked parameters after a SET
	internalReset                               // clean up after a client that left
	internalLSN                                 // record the writer's WAL position after a commit
)

// reply is one reply the server owes. For a Parse it also says what to
// undo if the server skips or rejects it: the server statement (key), and
// the client statement (name, def) that then does not exist either.
type reply struct {
	kind     replyKind
	query    bool            // replySync of a simple Query
	ends     bool            // replySync: its batch ends a transaction (COMMIT, ROLLBACK)
	copyEnds int             // replySync: the client's COPY ends before it
	writes   bool            // replySync: the request executes a statement that writes (Config.RecordLSN)
	purpose  internalPurpose // of a replyInternal
	names    []string        // replyInternal read-back: the parameters in the row
	key      string          // server statement the Parse creates
	unnamed  bool            // the Parse replaces the server's unnamed statement
	def      *stmtDef        // client statement the Parse creates ...
	name     string          // ... under this name ("" with def: the unnamed one)
}

// replyQueue holds, in order, the replies the server owes for what was
// sent to it. Replies the machine does not need to tell apart (BindComplete,
// RowDescription, DataRow, CommandComplete of the client's own messages)
// have no entry: they are forwarded as they come.
type replyQueue struct {
	items    []reply
	head     int
	requests int // replySync and replyInternal entries: ReadyForQuery messages owed
}

func (q *replyQueue) push(r reply) {
	q.items = append(q.items, r)
	if r.kind == replySync || r.kind == replyInternal {
		q.requests++
	}
}

func (q *replyQueue) empty() bool { return q.head == len(q.items) }

// onlyInternal reports whether what is owed, if anything, answers
// Sluice's own exchanges only.
func (q *replyQueue) onlyInternal() bool {
	for i := q.head; i < len(q.items); i++ {
		if q.items[i].kind != replyInternal {
			return false
		}
	}
	return true
}

// peek returns the next owed reply, or nil.
func (q *replyQueue) peek() *reply {
	if q.empty() {
		return nil
	}
	return &q.items[q.head]
}

// pop takes the next owed reply, or the zero reply.
func (q *replyQueue) pop() reply {
	if q.empty() {
		return reply{}
	}
	r := q.items[q.head]
	q.items[q.head] = reply{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	if r.kind == replySync || r.kind == replyInternal {
		q.requests--
	}
	return r
}

// skipToSync drops the owed replies the server will not send after an error
// in an extended-protocol batch: everything up to the next ReadyForQuery.
// undo is called for each dropped reply.
func (q *replyQueue) skipToSync(undo func(r *reply)) {
	for !q.empty() {
		r := q.peek()
		if r.kind == replySync || r.kind == replyInternal {
			return
		}
		undo(r)
		q.pop()
	}
}

// dropSyncs removes the client Syncs that were sent after the Execute that
// started a COPY FROM STDIN in an extended-protocol batch and before the
// client ended its data (those that followed copyEnds ends): the server
// ignores Sync in copy-in mode, so they earn no ReadyForQuery.
func (q *replyQueue) dropSyncs(copyEnds int) {
	kept := q.items[:q.head]
	for _, r := range q.items[q.head:] {
		if r.kind == replySync && !r.query && r.copyEnds == copyEnds {
			q.requests--
			continue
		}
		kept = append(kept, r)
	}
	for i := len(kept); i < len(q.items); i++ {
		q.items[i] = reply{}
	}
	q.items = kept
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
}

// reset forgets everything owed, when the server connection is gone.
func (q *replyQueue) reset() {
	clear(q.items)
	q.items, q.head, q.requests = q.items[:0], 0, 0
}
