//go:build linux

package consultest

import "syscall"

// sysProcAttr makes the kernel kill the agent if the process that started
// it dies without stopping it (a panic in another goroutine, a test
// timeout, a SIGKILL), so no Consul agent outlives its owner. The kernel
// sends the signal when the thread that started the agent exits; Go keeps
// its threads for the life of the process unless a goroutine exits while
// locked to one with runtime.LockOSThread, which nothing here does.
//
// The agent also gets a process group of its own, so that a Ctrl-C in the
// terminal reaches only its owner, which then stops it in order: `make
// run-consul` must deregister Sluice before the agent goes.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
