//go:build linux

package consultest

import "syscall"

// sysProcAttr makes the kernel kill the agent if the test binary dies
// without running its cleanups (a panic in another goroutine, a timeout, a
// SIGKILL), so no Consul agent outlives its test. The kernel sends the
// signal when the thread that started the agent exits; Go keeps its threads
// for the life of the process unless a goroutine exits while locked to one
// with runtime.LockOSThread, which nothing here does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
