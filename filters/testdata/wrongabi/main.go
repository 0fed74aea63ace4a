// Command wrongabi is a test module that claims a future ABI version.
package main

import "unsafe"

var scratch [64]byte

//go:wasmexport sluice_abi_v9
func abi() {}

//go:wasmexport sluice_scratch
func sluiceScratch(uint32) uint32 { return uint32(uintptr(unsafe.Pointer(&scratch[0]))) }

func main() {}
