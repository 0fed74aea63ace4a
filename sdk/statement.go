package sdk

import "unsafe"

// Statement is what a filter sees of one statement. It and its strings
// belong to the host's input buffer: valid only during the Statement hook.
type Statement struct {
	// SQL is the statement's text (a simple Query may hold several
	// statements), truncated to 1 MiB when Truncated is set.
	SQL string
	// Command is the first statement's command in upper case, as Sluice's
	// classifier names it: "SELECT", "INSERT", "BEGIN", "ALTER TABLE", ...
	Command string
	// Count is how many statements SQL holds.
	Count int
	// ReadOnly reports that the classifier found every statement certainly
	// read-only (including BEGIN READ ONLY).
	ReadOnly bool
	// InTransaction reports an open transaction: the server is then fixed
	// and a route is ignored.
	InTransaction bool
	// Extended reports the extended protocol (Parse or Bind).
	Extended bool
	// Borrow reports that the client holds no server connection, so that
	// the route chooses where the statement goes.
	Borrow bool
	// Truncated reports that SQL is only the first 1 MiB of the text.
	Truncated bool
	// Effects summarises the statements' effects on session state.
	Effects Effects
	// DefaultPin reports that Sluice will pin the session for this
	// statement unless the filter says otherwise; PinReason says why.
	DefaultPin bool
	// PinReason says why the classifier pins, such as "LISTEN".
	PinReason string
	// PinReasonCode is the ABI's code of PinReason (see filters/ABI.md).
	PinReasonCode int
}

// Effects is a set of kinds of session-state effect.
type Effects uint32

// The kinds of effect a statement may have on session state.
const (
	EffectSet        Effects = 1 << 1 // SET of a parameter
	EffectReset      Effects = 1 << 2 // RESET of a parameter
	EffectResetAll   Effects = 1 << 3 // RESET ALL
	EffectDiscardAll Effects = 1 << 4 // DISCARD ALL
	EffectPin        Effects = 1 << 5 // something that pins (LISTEN, PREPARE, ...)
	EffectUnpin      Effects = 1 << 6 // something that clears a pin
)

// Has reports whether e holds every kind in k.
func (e Effects) Has(k Effects) bool { return e&k == k }

const (
	inputHeader  = 28
	outputHeader = 20

	flagInTransaction = 1
	flagExtended      = 2
	flagBorrow        = 4
	flagReadOnly      = 8
	flagDefaultPin    = 16
	flagTruncated     = 32
)

// decode fills st from an input; it returns false for a malformed one.
// st's strings alias b.
func (st *Statement) decode(b []byte) bool {
	if len(b) < inputHeader {
		return false
	}
	flags := getU32(b[0:])
	s, c, r := uint64(getU32(b[16:])), uint64(getU32(b[20:])), uint64(getU32(b[24:]))
	if inputHeader+s+c+r > uint64(len(b)) {
		return false
	}
	rest := b[inputHeader:]
	*st = Statement{
		SQL:           view(rest[:s]),
		Command:       view(rest[s : s+c]),
		PinReason:     view(rest[s+c : s+c+r]),
		Count:         int(getU32(b[8:])),
		PinReasonCode: int(getU32(b[12:])),
		Effects:       Effects(getU32(b[4:])),
		InTransaction: flags&flagInTransaction != 0,
		Extended:      flags&flagExtended != 0,
		Borrow:        flags&flagBorrow != 0,
		ReadOnly:      flags&flagReadOnly != 0,
		DefaultPin:    flags&flagDefaultPin != 0,
		Truncated:     flags&flagTruncated != 0,
	}
	return true
}

// view returns b as a string without copying it.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
