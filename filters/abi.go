package filters

import (
	"encoding/binary"
	"errors"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
)

// The ABI, version 1: see ABI.md. The guest side is sdk/abi*.go.
const (
	abiMarker       = "sluice_abi_v1"
	exportScratch   = "sluice_scratch"
	exportConfigure = "sluice_on_configure"
	exportStart     = "sluice_on_session_start"
	exportStatement = "sluice_on_statement"
	exportEnd       = "sluice_on_session_end"
	exportHooks     = "sluice_hooks"

	// Bits of sluice_hooks' answer.
	hookBitConfigure = 1
	hookBitStart     = 2
	hookBitStatement = 4
	hookBitEnd       = 8

	flagInTransaction = 1
	flagExtended      = 2
	flagBorrow        = 4
	flagReadOnly      = 8
	flagDefaultPin    = 16
	flagTruncated     = 32

	inputHeader  = 28
	outputHeader = 20
	maxSQL       = 1 << 20

	routeDefault = 0
	routeWriter  = 1
	routeReplica = 2
	routeCluster = 3

	actionNone    = 0
	actionReject  = 1
	actionRewrite = 2

	pinKeep  = 0
	pinForce = 1
	pinNever = 2
)

// Status codes of host functions.
const (
	statusOK          = 0
	statusNotFound    = -1
	statusBadArgument = -2
	statusNoSession   = -3
	statusLimit       = -4
)

// errBadOutput is a malformed output of a hook.
var errBadOutput = errors.New("malformed filter decision")

// inputSize returns how many bytes encodeStatement writes for st.
func inputSize(st *session.Statement) int {
	sql := min(len(st.SQL), maxSQL)
	n := inputHeader + sql
	if len(st.Class) > 0 {
		n += len(st.Class[0].Command)
	}
	if r := defaultPin(st.Class); r != 0 {
		n += len(r.String())
	}
	return n
}

// defaultPin returns the reason of the first pin the classifier found.
func defaultPin(class []sqlclass.Statement) sqlclass.Reason {
	for i := range class {
		for _, e := range class[i].Effects {
			if e.Kind == sqlclass.Pin {
				return e.Reason
			}
		}
	}
	return 0
}

// encodeStatement writes st's input into b, which holds inputSize(st) bytes.
func encodeStatement(b []byte, st *session.Statement) int {
	var flags, effects uint32
	if st.InTransaction {
		flags |= flagInTransaction
	}
	if st.Extended {
		flags |= flagExtended
	}
	if st.Borrow {
		flags |= flagBorrow
	}
	ro := len(st.Class) > 0
	for i := range st.Class {
		if !st.Class[i].ReadOnly {
			ro = false
		}
		for _, e := range st.Class[i].Effects {
			effects |= 1 << e.Kind
		}
	}
	if ro {
		flags |= flagReadOnly
	}
	reason := defaultPin(st.Class)
	var reasonText, command string
	if reason != 0 {
		flags |= flagDefaultPin
		reasonText = reason.String()
	}
	if len(st.Class) > 0 {
		command = st.Class[0].Command
	}
	sql := st.SQL
	if len(sql) > maxSQL {
		sql = sql[:maxSQL]
		flags |= flagTruncated
	}
	le := binary.LittleEndian
	le.PutUint32(b[0:], flags)
	le.PutUint32(b[4:], effects)
	le.PutUint32(b[8:], uint32(len(st.Class)))
	le.PutUint32(b[12:], uint32(reason))
	le.PutUint32(b[16:], uint32(len(sql)))
	le.PutUint32(b[20:], uint32(len(command)))
	le.PutUint32(b[24:], uint32(len(reasonText)))
	n := inputHeader
	n += copy(b[n:], sql)
	n += copy(b[n:], command)
	n += copy(b[n:], reasonText)
	return n
}

// output is a decoded sluice_on_statement result. Its byte slices alias
// guest memory: copy what outlives the call.
type output struct {
	route, action, pin        byte
	cluster, code, text, pinR []byte
}

// decodeOutput checks and splits an output.
func decodeOutput(b []byte) (output, error) {
	var o output
	if len(b) < outputHeader || b[3] != 0 {
		return o, errBadOutput
	}
	le := binary.LittleEndian
	o.route, o.action, o.pin = b[0], b[1], b[2]
	k, q, t, p := le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint32(b[16:])
	total := uint64(outputHeader) + uint64(k) + uint64(q) + uint64(t) + uint64(p)
	if total != uint64(len(b)) {
		return o, errBadOutput
	}
	rest := b[outputHeader:]
	o.cluster, rest = rest[:k], rest[k:]
	o.code, rest = rest[:q], rest[q:]
	o.text, o.pinR = rest[:t], rest[t:]
	switch {
	case o.route > routeCluster, o.action > actionRewrite, o.pin > pinNever:
		return o, errBadOutput
	case (o.route == routeCluster) != (k > 0):
		return o, errBadOutput
	case (o.action == actionReject) != (q > 0):
		return o, errBadOutput
	case o.action == actionReject && !validSQLState(o.code):
		return o, errBadOutput
	case o.action == actionNone && t > 0:
		return o, errBadOutput
	case (o.pin == pinForce) != (p > 0):
		return o, errBadOutput
	}
	return o, nil
}

func validSQLState(c []byte) bool {
	if len(c) != 5 || (c[0] == '0' && c[1] == '0') {
		return false
	}
	for _, x := range c {
		if (x < '0' || x > '9') && (x < 'A' || x > 'Z') {
			return false
		}
	}
	return true
}
