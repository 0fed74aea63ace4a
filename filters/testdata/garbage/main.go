// Command garbage is a test filter that speaks ABI v1 without the SDK and
// answers garbage when a statement starts with "g".
package main

import "unsafe"

var scratch []byte

//go:wasmexport sluice_abi_v1
func abi() {}

//go:wasmexport sluice_scratch
func sluiceScratch(n uint32) uint32 {
	if uint32(len(scratch)) < n {
		scratch = make([]byte, n)
	}
	return uint32(uintptr(unsafe.Pointer(&scratch[0])))
}

var replica = [20]byte{2}                  // route replica, nothing else
var bad = [20]byte{9, 9, 9, 9, 1, 2, 3, 4} // nonsense

//go:wasmexport sluice_on_statement
func onStatement(n uint32) uint64 {
	sqlFirst := scratch[28]
	switch {
	case n > 28 && sqlFirst == 'g':
		return uint64(uintptr(unsafe.Pointer(&bad[0])))<<32 | 20
	case n > 28 && sqlFirst == 'o': // outside memory
		return 0xfffffff0<<32 | 64
	}
	return uint64(uintptr(unsafe.Pointer(&replica[0])))<<32 | 20
}

func main() {}
