package evloop

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read and Write are read(2) and write(2) for the non-blocking sockets of
// a loop. They never block, so they skip what Go does around a system
// call that might (handing the thread's P to another thread if the call
// lasts): four of them per transaction, that bookkeeping is worth saving.
// They return -1 and the errno on failure, as unix.Read and unix.Write do.

// Read reads from a non-blocking fd.
func Read(fd int, b []byte) (int, error) {
	return rawIO(unix.SYS_READ, fd, b)
}

// Write writes to a non-blocking fd.
func Write(fd int, b []byte) (int, error) {
	return rawIO(unix.SYS_WRITE, fd, b)
}

func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
