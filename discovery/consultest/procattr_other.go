//go:build !linux

package consultest

import "syscall"

// sysProcAttr gives the agent a process group of its own, so that a Ctrl-C
// in the terminal reaches only its owner, which then stops it in order.
// Only Linux can also tie the agent's life to its owner's.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
