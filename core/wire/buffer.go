package wire

import (
	"bufio"
	"errors"
	"io"
)

// The buffers of a Reader and a Writer behave as bufio's Reader and Writer
// of bufferSize bytes, except that they start at minBufferSize and grow
// (up to bufferSize) only when what passes through them needs it: a
// connection that only logs in, as a client handed to an event loop does
// before its reader and writer are reused for the next login, or that
// stays idle, keeps a small buffer; a busy one has the full size after a
// few reads.

// minBufferSize is the size a buffer starts at: enough for a login.
const minBufferSize = 1 << 10

// maxConsecutiveEmptyReads is how many reads returning nothing, and no
// error, a Reader tries before it reports io.ErrNoProgress (as bufio).
const maxConsecutiveEmptyReads = 100

var errNegativeRead = errors.New("wire: reader returned negative count from Read")

// readBuffer is bufio.Reader's Peek, Discard and Read over a buffer that
// grows. It is not safe for concurrent use.
type readBuffer struct {
	rd   io.Reader
	buf  []byte // buf[r:w] is buffered; len(buf) grows up to bufferSize
	r, w int
	err  error // from rd; returned once what was read before it is consumed
	// full: the last read filled the buffer, so that the peer likely has
	// more to send: the next read goes into a larger buffer.
	full bool
}

func newReadBuffer(rd io.Reader) readBuffer {
	return readBuffer{rd: rd, buf: make([]byte, minBufferSize)}
}

// reset discards what is buffered, and any error, and reads from rd
// instead. The buffer is kept.
func (b *readBuffer) reset(rd io.Reader) {
	buf := b.buf
	if buf == nil {
		buf = make([]byte, minBufferSize)
	}
	*b = readBuffer{rd: rd, buf: buf}
}

func (b *readBuffer) buffered() int { return b.w - b.r }

// grow replaces the buffer with one of at least n bytes (twice the size at
// least, bufferSize at most), holding what is buffered at its start.
func (b *readBuffer) grow(n int) {
	buf := make([]byte, min(max(n, 2*len(b.buf)), bufferSize))
	b.w = copy(buf, b.buf[b.r:b.w])
	b.r = 0
	b.buf = buf
}

// fill reads new data into the buffer, which is not full: one read that
// returns something or an error.
func (b *readBuffer) fill() {
	switch {
	case b.full && len(b.buf) < bufferSize:
		b.grow(2 * len(b.buf))
	case b.r > 0:
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
	for range maxConsecutiveEmptyReads {
		n, err := b.rd.Read(b.buf[b.w:])
		if n < 0 {
			panic(errNegativeRead)
		}
		b.w += n
		b.full = b.w == len(b.buf)
		if err != nil {
			b.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	b.err = io.ErrNoProgress
}

func (b *readBuffer) readErr() error {
	err := b.err
	b.err = nil
	return err
}

// peek returns the next n bytes without consuming them, reading as needed;
// fewer with the error that stopped it (bufio.ErrBufferFull for n beyond
// bufferSize). They are valid until the next call.
func (b *readBuffer) peek(n int) ([]byte, error) {
	if uint(n) <= uint(b.w-b.r) {
		return b.buf[b.r : b.r+n], nil
	}
	return b.peekMore(n)
}

// peekMore is peek when fewer than n bytes are buffered.
func (b *readBuffer) peekMore(n int) ([]byte, error) {
	if n < 0 {
		return nil, bufio.ErrNegativeCount
	}
	if n > len(b.buf) && len(b.buf) < bufferSize {
		b.grow(n)
	}
	for b.w-b.r < n && b.w-b.r < len(b.buf) && b.err == nil {
		b.fill()
	}
	if n > len(b.buf) {
		return b.buf[b.r:b.w], bufio.ErrBufferFull
	}
	var err error
	if avail := b.w - b.r; avail < n {
		n = avail
		if err = b.readErr(); err == nil {
			err = bufio.ErrBufferFull
		}
	}
	return b.buf[b.r : b.r+n], err
}

// discard consumes the next n bytes, reading as needed, and returns how
// many it consumed, with the error that stopped it short.
func (b *readBuffer) discard(n int) (int, error) {
	if uint(n) <= uint(b.w-b.r) {
		b.r += n
		return n, nil
	}
	if n < 0 {
		return 0, bufio.ErrNegativeCount
	}
	remain := n
	for remain > 0 {
		skip := b.buffered()
		if skip == 0 {
			b.fill()
			skip = b.buffered()
		}
		skip = min(skip, remain)
		b.r += skip
		remain -= skip
		if remain > 0 && b.err != nil {
			return n - remain, b.readErr()
		}
	}
	return n, nil
}

// read is bufio.Reader's Read: what is buffered, or one read from rd
// (straight into p when p is at least as large as the buffer).
func (b *readBuffer) read(p []byte) (int, error) {
	if len(p) == 0 {
		if b.buffered() > 0 {
			return 0, nil
		}
		return 0, b.readErr()
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		if len(p) >= len(b.buf) {
			n, err := b.rd.Read(p)
			if n < 0 {
				panic(errNegativeRead)
			}
			b.err = err
			return n, b.readErr()
		}
		b.r, b.w = 0, 0
		n, err := b.rd.Read(b.buf)
		if n < 0 {
			panic(errNegativeRead)
		}
		b.err = err
		if n == 0 {
			return 0, b.readErr()
		}
		b.w = n
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// readFull is io.ReadFull over read.
func (b *readBuffer) readFull(p []byte) error {
	n := 0
	var err error
	for n < len(p) && err == nil {
		var k int
		k, err = b.read(p[n:])
		n += k
	}
	switch {
	case n == len(p):
		return nil
	case n > 0 && err == io.EOF:
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeBuffer is bufio.Writer's Write and Flush over a buffer that grows.
// It is not safe for concurrent use.
type writeBuffer struct {
	wr  io.Writer
	buf []byte // what waits to be written; cap(buf) grows up to bufferSize
	err error  // the first write error, which every later call returns
}

func newWriteBuffer(wr io.Writer) writeBuffer {
	return writeBuffer{wr: wr, buf: make([]byte, 0, minBufferSize)}
}

// reset discards what is buffered, and any error, and writes to wr
// instead. The buffer is kept.
func (b *writeBuffer) reset(wr io.Writer) {
	b.wr, b.buf, b.err = wr, b.buf[:0], nil
}

func (b *writeBuffer) buffered() int  { return len(b.buf) }
func (b *writeBuffer) available() int { return bufferSize - len(b.buf) }

// add buffers p, which fits within bufferSize, growing the buffer if need
// be.
func (b *writeBuffer) add(p []byte) {
	if len(b.buf)+len(p) > cap(b.buf) {
		grown := make([]byte, len(b.buf), min(max(2*cap(b.buf), len(b.buf)+len(p)), bufferSize))
		copy(grown, b.buf)
		b.buf = grown
	}
	b.buf = append(b.buf, p...)
}

// write buffers p, writing out the buffer each time it holds bufferSize
// bytes; a write larger than the buffer, when nothing is buffered, goes
// straight to wr.
func (b *writeBuffer) write(p []byte) (nn int, err error) {
	for len(p) > b.available() && b.err == nil {
		var n int
		if len(b.buf) == 0 {
			n, b.err = b.wr.Write(p)
		} else {
			n = b.available()
			b.add(p[:n])
			b.flush()
		}
		nn += n
		p = p[n:]
	}
	if b.err != nil {
		return nn, b.err
	}
	b.add(p)
	return nn + len(p), nil
}

// flush writes what is buffered; on a failure, what was not written stays.
func (b *writeBuffer) flush() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	n, err := b.wr.Write(b.buf)
	if n < len(b.buf) && err == nil {
		err = io.ErrShortWrite
	}
	if err != nil {
		if n > 0 && n < len(b.buf) {
			copy(b.buf, b.buf[n:])
		}
		b.buf = b.buf[:len(b.buf)-n]
		b.err = err
		return err
	}
	b.buf = b.buf[:0]
	return nil
}
