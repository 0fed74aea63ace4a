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
	waited := false
	var buf [1]byte
	rerr := raw.Read(func(fd uintptr) bool {
		if waited {
			return true
		}
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if n > 0 || err == nil || (err != syscall.EAGAIN && err != syscall.EWOULDBLOCK) {
			return true // data, end of file or an error: all worth a read
		}
		waited = true
		return false
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
