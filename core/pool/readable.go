package pool

import "syscall"

// AwaitReadable blocks until the server has sent something (or closed the
// connection) without reading it, or until the read deadline set with
// SetReadDeadline passes; it then returns the deadline's error. A session
// that waits for its client while holding a connection uses it to notice a
// notification or an error from the server without a second reader.
func (c *Conn) AwaitReadable() error {
	if c.R.Buffered() > 0 {
		return nil
	}
	sc, ok := c.RawConn().(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var buf [1]byte
	rerr := raw.Read(func(fd uintptr) bool {
		// Peek on every call: the poller may report readiness left over
		// from data that was read since, and a wake-up that is taken for
		// data would send the session to read a server that owes nothing.
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return n > 0 || err == nil || (err != syscall.EAGAIN && err != syscall.EWOULDBLOCK)
	})
	return rerr
}

// Readable reports, without blocking, whether the server has sent
// something not read yet (or closed the connection).
func (c *Conn) Readable() bool {
	if c.R.Buffered() > 0 {
		return true
	}
	sc, ok := c.RawConn().(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	readable := false
	var buf [1]byte
	raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		readable = n > 0 || err == nil || (err != syscall.EAGAIN && err != syscall.EWOULDBLOCK)
		return true
	})
	return readable
}

// Pool returns the pool the connection belongs to.
func (c *Conn) Pool() *Pool { return c.pool }
