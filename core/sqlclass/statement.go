package sqlclass

import "strconv"

// Statement is one classified SQL statement. A Statement returned by
// Classify or ClassifyOne belongs to the caller; its strings may share
// memory with the SQL text it was classified from.
type Statement struct {
	// Command is the statement's leading key word(s) in upper case, single
	// spaced: "SELECT", "INSERT", "SET", "ALTER TABLE", "WITH" (whatever
	// the main statement), "VALUES", ... Synonyms take the spelling of
	// PostgreSQL's command tag ("END" is "COMMIT", "ABORT" is "ROLLBACK",
	// "CREATE UNIQUE INDEX" is "CREATE INDEX", "CREATE USER" is "CREATE
	// ROLE"), and temporary objects are "CREATE TEMP TABLE", "CREATE TEMP
	// VIEW" and "CREATE TEMP SEQUENCE". It is "" for an empty statement
	// and for text that does not start with a word.
	Command string

	// ReadOnly is true only when the statement certainly writes nothing
	// and takes no locks beyond those of a read, so that a replica can run
	// it: SELECT, VALUES, TABLE, SHOW, WITH, and EXPLAIN without ANALYZE of
	// one of those, without a locking clause (FOR UPDATE, FOR NO KEY
	// UPDATE, FOR SHARE, FOR KEY SHARE), without SELECT INTO, without a
	// data-modifying WITH query, and calling only functions known to read:
	// common built-ins (count, now, lower, jsonb_build_object, ...) and
	// pg_catalog-qualified ones, except those that change state or work
	// only on a primary (nextval, currval, set_config, pg_notify, advisory
	// locks, large-object writes, txid_current, pg_current_wal_lsn, ...).
	// A call of any other function, which may write, makes a statement
	// not read-only. BEGIN and START TRANSACTION are read-only when they
	// open a READ ONLY transaction, in which the server refuses writes.
	ReadOnly bool

	// Effects are the statement's effects on session state, in the order
	// they appear in the text. It is nil for most statements.
	Effects []Effect
}

// Effect is one effect of a statement on session state.
type Effect struct {
	// Kind says what the effect is.
	Kind EffectKind
	// Reason says why a Pin pins, or which pin an Unpin clears; it is 0
	// for other kinds.
	Reason Reason
	// Name is the lower-case name of the parameter a SetParam or
	// ResetParam changes, such as "search_path" or "app.tenant".
	Name string
	// Value is the value a SetParam sets, exactly as written after TO or
	// "=" (or after TIME ZONE, SCHEMA, NAMES), without surrounding white
	// space: `'UTC'`, `a, "B"`, `500`.
	Value string
}

// String returns the effect in a compact form for logs and tests, such as
// `SET search_path = public` or `Pin LISTEN`.
func (e Effect) String() string {
	switch e.Kind {
	case SetParam:
		return "SET " + e.Name + " = " + e.Value
	case ResetParam:
		return "RESET " + e.Name
	case Pin, Unpin:
		return e.Kind.String() + " " + e.Reason.String()
	}
	return e.Kind.String()
}

// EffectKind is the kind of an Effect. The zero value is not a valid kind.
type EffectKind uint8

// The kinds of effect a statement can have on session state.
const (
	// SetParam sets a run-time parameter for the session (SET, SET
	// SESSION, SET TIME ZONE, SET SCHEMA, SET NAMES). A session can track
	// the value and replay it on another server connection.
	SetParam EffectKind = iota + 1
	// ResetParam returns a run-time parameter to its default (RESET name,
	// SET name TO DEFAULT).
	ResetParam
	// ResetAll returns every run-time parameter to its default (RESET
	// ALL). It does not reset ROLE or SESSION AUTHORIZATION.
	ResetAll
	// DiscardAll resets the whole session (DISCARD ALL): it stands for
	// CLOSE ALL, SET SESSION AUTHORIZATION DEFAULT, RESET ALL, DEALLOCATE
	// ALL, UNLISTEN *, pg_advisory_unlock_all() and DISCARD TEMP, so it
	// clears every pin reason the classifier can name.
	DiscardAll
	// Pin means the session must stay on its server connection; Reason
	// says why.
	Pin
	// Unpin means the statement clears the session state that Reason
	// names (for example UNLISTEN * clears ReasonListen).
	Unpin
)

// Valid reports whether k is one of the defined kinds.
func (k EffectKind) Valid() bool { return k >= SetParam && k <= Unpin }

// String returns the name of the kind, such as "SetParam".
func (k EffectKind) String() string {
	switch k {
	case SetParam:
		return "SetParam"
	case ResetParam:
		return "ResetParam"
	case ResetAll:
		return "ResetAll"
	case DiscardAll:
		return "DiscardAll"
	case Pin:
		return "Pin"
	case Unpin:
		return "Unpin"
	}
	return "EffectKind(" + strconv.Itoa(int(k)) + ")"
}

// Reason names session state that a server connection keeps and that
// cannot be moved to another one: why a session is pinned. The zero value
// means no reason.
type Reason uint8

// The reasons a statement pins a session, or the pins it clears.
const (
	// ReasonSetRole is SET ROLE; RESET ROLE and SET ROLE NONE clear it.
	ReasonSetRole Reason = iota + 1
	// ReasonSessionAuthorization is SET SESSION AUTHORIZATION; RESET
	// SESSION AUTHORIZATION and SET SESSION AUTHORIZATION DEFAULT clear it.
	// Every form of SET SESSION AUTHORIZATION also resets the role, so it
	// comes with an Unpin of ReasonSetRole.
	ReasonSessionAuthorization
	// ReasonSetConfig is a call of set_config whose is_local argument is
	// not literally true, or an UPDATE of pg_settings: the parameter and
	// value may be computed, so the classifier cannot report them for
	// replay.
	ReasonSetConfig
	// ReasonSetFromCurrent is SET name FROM CURRENT, whose value is only
	// known to the server.
	ReasonSetFromCurrent
	// ReasonPrepare is an SQL PREPARE; DEALLOCATE ALL clears it.
	ReasonPrepare
	// ReasonListen is LISTEN; UNLISTEN * clears it.
	ReasonListen
	// ReasonTempObject is a temporary table, view or sequence (or another
	// object created in pg_temp); DISCARD TEMP clears it.
	ReasonTempObject
	// ReasonCursorWithHold is DECLARE ... WITH HOLD; CLOSE ALL clears it.
	ReasonCursorWithHold
	// ReasonAdvisoryLock is a session-level advisory lock
	// (pg_advisory_lock, pg_try_advisory_lock and their _shared forms);
	// pg_advisory_unlock_all() clears it.
	ReasonAdvisoryLock
	// ReasonLoad is LOAD of a shared library.
	ReasonLoad
	// ReasonUnknown is a statement the classifier cannot understand well
	// enough to know its effects: unterminated text, a malformed SET or
	// RESET, SET SESSION CHARACTERISTICS, names with Unicode escapes. No
	// Unpin clears it; the session decides whether DISCARD ALL does.
	ReasonUnknown
)

// String returns a human text for the reason, for logs and errors.
func (r Reason) String() string {
	switch r {
	case 0:
		return "none"
	case ReasonSetRole:
		return "SET ROLE"
	case ReasonSessionAuthorization:
		return "SET SESSION AUTHORIZATION"
	case ReasonSetConfig:
		return "set_config(..., false)"
	case ReasonSetFromCurrent:
		return "SET ... FROM CURRENT"
	case ReasonPrepare:
		return "SQL PREPARE"
	case ReasonListen:
		return "LISTEN"
	case ReasonTempObject:
		return "temporary table, view or sequence"
	case ReasonCursorWithHold:
		return "DECLARE ... WITH HOLD"
	case ReasonAdvisoryLock:
		return "session-level advisory lock"
	case ReasonLoad:
		return "LOAD"
	case ReasonUnknown:
		return "statement the classifier cannot understand"
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Valid reports whether r is one of the defined reasons (not 0).
func (r Reason) Valid() bool { return r >= ReasonSetRole && r <= ReasonUnknown }
