package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderLen is the length of a message header: one type byte and a
// big-endian int32 length that counts itself but not the type byte.
const HeaderLen = 5

// bufferSize is the size of the read and write buffers of one connection
// (which start smaller and grow to it as needed: see buffer.go). Messages
// up to this size are forwarded from the buffer without a copy to the heap;
// larger ones are streamed.
const bufferSize = 16 << 10

// MaxDecodedLen bounds the body of a message Sluice decodes (as opposed to
// forwards). Longer ones are protocol violations.
const MaxDecodedLen = 1 << 20

// maxMessageLen is PostgreSQL's own bound on a message (PQ_LARGE_MESSAGE_LIMIT).
const maxMessageLen = 0x3fffffff

// ErrBadLength reports a message whose length field cannot be valid.
var ErrBadLength = errors.New("invalid message length")

// Reader reads protocol messages from a connection through a buffer. It is
// not safe for concurrent use.
type Reader struct {
	br readBuffer
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: newReadBuffer(r)}
}

// Reset discards buffered data and reads from r instead.
func (r *Reader) Reset(rd io.Reader) { r.br.reset(rd) }

// TakeBuffered returns a copy of what is buffered and empties the buffer.
func (r *Reader) TakeBuffered() []byte {
	n := r.br.buffered()
	if n == 0 {
		return nil
	}
	b, _ := r.br.peek(n)
	out := append([]byte(nil), b...)
	r.br.discard(n)
	return out
}

// Buffered returns how many bytes can be read without blocking.
func (r *Reader) Buffered() int { return r.br.buffered() }

// PeekHeader blocks until a whole header is buffered and returns the message
// type and the body length. The header stays in the buffer.
func (r *Reader) PeekHeader() (typ byte, bodyLen int, err error) {
	h, err := r.br.peek(HeaderLen)
	if err != nil {
		if err == io.EOF && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n < 4 || n > maxMessageLen {
		return 0, 0, fmt.Errorf("%w: %d for message type %q", ErrBadLength, n, h[0])
	}
	return h[0], int(n) - 4, nil
}

// ReadMessage reads the next message whole and returns its type and body.
// The body aliases the buffer when it fits and is valid only until the next
// call on r. Bodies longer than MaxDecodedLen are refused.
func (r *Reader) ReadMessage() (typ byte, body []byte, err error) {
	typ, n, err := r.PeekHeader()
	if err != nil {
		return 0, nil, err
	}
	if n > MaxDecodedLen {
		return 0, nil, fmt.Errorf("%w: %d bytes for message type %q", ErrBadLength, n, typ)
	}
	if HeaderLen+n <= bufferSize {
		b, err := r.br.peek(HeaderLen + n)
		if err != nil {
			return 0, nil, unexpected(err)
		}
		r.br.discard(HeaderLen + n)
		return typ, b[HeaderLen:], nil
	}
	r.br.discard(HeaderLen)
	body = make([]byte, n)
	if err := r.br.readFull(body); err != nil {
		return 0, nil, unexpected(err)
	}
	return typ, body, nil
}

// ErrWrite wraps errors from the writing side of CopyTo, so that callers
// can tell which peer failed.
var ErrWrite = errors.New("write to peer failed")

// PeekBody returns the first k bytes of the body of the message whose
// header was just peeked, without consuming anything. k must not exceed the
// body length.
func (r *Reader) PeekBody(k int) ([]byte, error) {
	b, err := r.br.peek(HeaderLen + k)
	if err != nil {
		return nil, unexpected(err)
	}
	return b[HeaderLen:], nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Writer buffers protocol messages to a connection. It is not safe for
// concurrent use.
type Writer struct {
	bw writeBuffer
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: newWriteBuffer(w)}
}

// Reset discards buffered data and writes to w instead.
func (w *Writer) Reset(wr io.Writer) { w.bw.reset(wr) }

// Write buffers encoded messages.
func (w *Writer) Write(b []byte) (int, error) { return w.bw.write(b) }

// Buffered returns how many bytes wait to be flushed.
func (w *Writer) Buffered() int { return w.bw.buffered() }

// Flush writes buffered data to the connection.
func (w *Writer) Flush() error { return w.bw.flush() }

// WriteMessage buffers encoded messages and flushes them.
func (w *Writer) WriteMessage(b []byte) error {
	if _, err := w.bw.write(b); err != nil {
		return err
	}
	return w.bw.flush()
}

// BufferSize is the size of a Reader's buffer: the most PeekBody can show.
const BufferSize = bufferSize

// Discard consumes k bytes of the current message.
func (r *Reader) Discard(k int) error {
	_, err := r.br.discard(k)
	return unexpected(err)
}

// CopyTo streams the next k bytes to w in buffer-sized chunks, never
// holding more than a buffer. All k bytes are consumed even when writing
// fails (the write error is then returned wrapped in ErrWrite), so that r
// stays at a message boundary.
func (r *Reader) CopyTo(w *Writer, k int) error {
	var werr error
	for k > 0 {
		b, err := r.br.peek(min(k, bufferSize))
		if len(b) == 0 && err != nil {
			return unexpected(err)
		}
		if len(b) > k {
			b = b[:k]
		}
		if werr == nil {
			_, werr = w.bw.write(b)
		}
		r.br.discard(len(b))
		k -= len(b)
	}
	if werr != nil {
		return fmt.Errorf("%w: %w", ErrWrite, werr)
	}
	return nil
}

// ReadFull reads len(dst) bytes into dst.
func (r *Reader) ReadFull(dst []byte) error {
	return unexpected(r.br.readFull(dst))
}

// MaxMessageLen is PostgreSQL's own bound on the length of a message.
const MaxMessageLen = maxMessageLen
