//go:build wasip1

package sdk

import "unsafe"

// The exports and imports of filters/ABI.md, version 1.

//go:wasmimport sluice log
func sluiceLog(level int32, ptr unsafe.Pointer, n uint32) int32

//go:wasmimport sluice config_get
func sluiceConfigGet(ptr unsafe.Pointer, capacity uint32) int32

//go:wasmimport sluice attr_get
func sluiceAttrGet(key int32, ptr unsafe.Pointer, capacity uint32) int32

//go:wasmimport sluice kv_get
func sluiceKVGet(kptr unsafe.Pointer, klen uint32, vptr unsafe.Pointer, vcap uint32) int32

//go:wasmimport sluice kv_set
func sluiceKVSet(kptr unsafe.Pointer, klen uint32, vptr unsafe.Pointer, vlen uint32) int32

//go:wasmimport sluice kv_delete
func sluiceKVDelete(kptr unsafe.Pointer, klen uint32) int32

//go:wasmimport sluice counter_add
func sluiceCounterAdd(ptr unsafe.Pointer, n uint32, delta int64) int32

var (
	scratch []byte    // the host writes each hook's input here
	output  []byte    // a decision that does not fit after the input
	stmt    Statement // reused: the hot path does not allocate
	failure []byte    // Configure's error, kept alive for the host to read
)

//go:wasmexport sluice_abi_v1
func sluiceABIv1() {}

// sluiceHooks tells the host which hooks the registered filter has, so
// that it calls no other.
//
//go:wasmexport sluice_hooks
func sluiceHooks() uint32 {
	var mask uint32
	if registered.configure != nil {
		mask |= 1
	}
	if registered.start != nil {
		mask |= 2
	}
	if registered.statement != nil {
		mask |= 4
	}
	if registered.end != nil {
		mask |= 8
	}
	return mask
}

//go:wasmexport sluice_scratch
func sluiceScratch(size uint32) uint32 {
	if uint32(len(scratch)) < size {
		scratch = make([]byte, size)
	}
	return addr(scratch)
}

//go:wasmexport sluice_on_configure
func sluiceOnConfigure() uint64 {
	if registered.configure == nil {
		return 0
	}
	var raw []byte
	if n := sluiceConfigGet(nil, 0); n > 0 {
		raw = make([]byte, n)
		sluiceConfigGet(unsafe.Pointer(&raw[0]), uint32(n))
	}
	if err := registered.configure.Configure(Config{raw: raw}); err != nil {
		failure = []byte(err.Error())
		if len(failure) == 0 {
			failure = []byte("configuration rejected")
		}
		return pack(failure)
	}
	return 0
}

//go:wasmexport sluice_on_session_start
func sluiceOnSessionStart() uint64 {
	if registered.start == nil {
		return 0
	}
	return answer(registered.start.SessionStart(Session{}), nil)
}

//go:wasmexport sluice_on_statement
func sluiceOnStatement(n uint32) uint64 {
	if registered.statement == nil || int(n) > len(scratch) || !stmt.decode(scratch[:n]) {
		return 0
	}
	return answer(registered.statement.Statement(Session{}, &stmt), scratch[n:])
}

// answer encodes d for the host, in room when it fits there (after the
// input, so that the decision may quote the statement), else in output.
func answer(d Decision, room []byte) uint64 {
	if d == (Decision{}) {
		return 0
	}
	size := d.size()
	out := room
	if len(out) < size {
		if len(output) < size {
			output = make([]byte, size)
		}
		out = output
	}
	out = out[:size]
	d.encode(out)
	return pack(out)
}

//go:wasmexport sluice_on_session_end
func sluiceOnSessionEnd() {
	if registered.end != nil {
		registered.end.SessionEnd(Session{})
	}
}

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func pack(b []byte) uint64 { return uint64(addr(b))<<32 | uint64(len(b)) }

func strPtr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

// get implements the *_get convention: try a stack buffer, then one of the
// full length.
func get(call func(ptr unsafe.Pointer, capacity uint32) int32) (string, bool) {
	var small [128]byte
	n := call(unsafe.Pointer(&small[0]), uint32(len(small)))
	if n < 0 {
		return "", false
	}
	if int(n) <= len(small) {
		return string(small[:n]), true
	}
	big := make([]byte, n)
	if call(unsafe.Pointer(&big[0]), uint32(n)) != n {
		return "", false
	}
	return unsafe.String(&big[0], len(big)), true
}

func attr(key int32) string {
	v, _ := get(func(p unsafe.Pointer, c uint32) int32 { return sluiceAttrGet(key, p, c) })
	return v
}

func kvGet(key string) (string, bool) {
	return get(func(p unsafe.Pointer, c uint32) int32 {
		return sluiceKVGet(strPtr(key), uint32(len(key)), p, c)
	})
}

func kvSet(key, value string) bool {
	return sluiceKVSet(strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value))) == 0
}

func kvDelete(key string) { sluiceKVDelete(strPtr(key), uint32(len(key))) }

func hostLog(level Level, msg string) { sluiceLog(int32(level), strPtr(msg), uint32(len(msg))) }

func counterAdd(name string, delta int64) { sluiceCounterAdd(strPtr(name), uint32(len(name)), delta) }
