//go:build !linux

package consultest

import "syscall"

// sysProcAttr returns nil: only Linux can tie the agent's life to the test
// binary's.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
