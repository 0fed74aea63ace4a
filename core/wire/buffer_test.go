package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// The growing buffers must behave as bufio's of bufferSize bytes: these
// tests run the same operations on both and compare what comes out.

// chunkReader returns data in reads of at most the next of sizes (cycling),
// then err for ever.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
	err   error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, c.err
	}
	n := min(len(p), len(c.data))
	if len(c.sizes) > 0 {
		n = min(n, c.sizes[c.i%len(c.sizes)])
		c.i++
	}
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// chunkWriter accepts at most chunk bytes per Write (a short write with no
// error when it takes less), and fails once limit bytes were written; it
// records every call.
type chunkWriter struct {
	chunk, limit int
	written      int
	calls        [][]byte
}

var errLimit = errors.New("limit reached")

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	if c.chunk > 0 {
		n = min(n, c.chunk)
	}
	var err error
	if c.limit > 0 && c.written+n > c.limit {
		n, err = c.limit-c.written, errLimit
	}
	c.written += n
	c.calls = append(c.calls, bytes.Clone(p[:n]))
	return n, err
}

// bufioReader is the reference for readBuffer.
type bufioReader struct{ *bufio.Reader }

func (b bufioReader) peek(n int) ([]byte, error) { return b.Peek(n) }
func (b bufioReader) discard(n int) (int, error) { return b.Discard(n) }
func (b bufioReader) readFull(p []byte) error {
	_, err := io.ReadFull(b.Reader, p)
	return err
}

type peekReader interface {
	peek(n int) ([]byte, error)
	discard(n int) (int, error)
	readFull(p []byte) error
}

// compareReaders runs the operations ops encodes on both readers of the
// same input and reports the first difference.
func compareReaders(t *testing.T, data []byte, sizes []int, end error, ops []byte) {
	t.Helper()
	got := newReadBuffer(&chunkReader{data: data, sizes: sizes, err: end})
	want := bufioReader{bufio.NewReaderSize(&chunkReader{data: data, sizes: sizes, err: end}, bufferSize)}
	readers := []peekReader{&got, want}
	for i := 0; i+2 < len(ops); i += 3 {
		n := int(ops[i+1])<<8 | int(ops[i+2])
		n %= bufferSize + 64
		type result struct {
			b   []byte
			k   int
			err error
		}
		var results [2]result
		for j, r := range readers {
			switch ops[i] % 3 {
			case 0:
				b, err := r.peek(n)
				if n > bufferSize { // what is buffered then depends on the buffer
					b = nil
				}
				results[j] = result{b: bytes.Clone(b), err: err}
			case 1:
				k, err := r.discard(n)
				results[j] = result{k: k, err: err}
			case 2:
				p := make([]byte, n)
				results[j] = result{b: p, err: r.readFull(p)}
			}
		}
		if g, w := results[0], results[1]; !bytes.Equal(g.b, w.b) || g.k != w.k || g.err != w.err {
			t.Fatalf("operation %d (%d, %d): got %d bytes, %d, %v; bufio %d bytes, %d, %v",
				i/3, ops[i]%3, n, len(g.b), g.k, g.err, len(w.b), w.k, w.err)
		}
		if len(got.buf) > bufferSize {
			t.Fatalf("the buffer grew to %d bytes", len(got.buf))
		}
	}
}

// compareWriters runs the writes and flushes ops encodes on both writers
// and compares the results and what reached the underlying writers.
func compareWriters(t *testing.T, chunk, limit int, ops []byte) {
	t.Helper()
	gotW, wantW := &chunkWriter{chunk: chunk, limit: limit}, &chunkWriter{chunk: chunk, limit: limit}
	got, want := newWriteBuffer(gotW), bufio.NewWriterSize(wantW, bufferSize)
	for i := 0; i+2 < len(ops); i += 3 {
		if ops[i]%4 == 0 {
			g, w := got.flush(), want.Flush()
			if g != w {
				t.Fatalf("flush %d: %v, bufio %v", i/3, g, w)
			}
		} else {
			p := bytes.Repeat([]byte{ops[i]}, (int(ops[i+1])<<8|int(ops[i+2]))%(2*bufferSize+64))
			gn, gerr := got.write(p)
			wn, werr := want.Write(p)
			if gn != wn || gerr != werr {
				t.Fatalf("write %d of %d bytes: %d %v, bufio %d %v", i/3, len(p), gn, gerr, wn, werr)
			}
		}
		if got.buffered() != want.Buffered() || cap(got.buf) > bufferSize {
			t.Fatalf("operation %d: %d buffered (capacity %d), bufio %d", i/3, got.buffered(), cap(got.buf), want.Buffered())
		}
		if len(gotW.calls) != len(wantW.calls) {
			t.Fatalf("operation %d: the underlying writer saw %d calls, with bufio %d", i/3, len(gotW.calls), len(wantW.calls))
		}
		for c := range gotW.calls {
			if !bytes.Equal(gotW.calls[c], wantW.calls[c]) {
				t.Fatalf("operation %d: write %d differs from bufio's", i/3, c)
			}
		}
	}
}

func TestBuffersBehaveAsBufio(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		size := rng.IntN(5 * bufferSize)
		if i%4 == 0 {
			size = rng.IntN(1000) // reaching the end (and its error) often
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.IntN(256))
		}
		var sizes []int
		for range rng.IntN(4) {
			sizes = append(sizes, 1+rng.IntN(3*bufferSize))
		}
		end := io.EOF
		if i%3 == 0 {
			end = errLimit
		}
		ops := make([]byte, 3*rng.IntN(60))
		for j := range ops {
			ops[j] = byte(rng.IntN(256))
		}
		// Small operations most of the time, as messages are, and sizes
		// at the buffer's bounds.
		for j := 1; j < len(ops); j += 3 {
			switch rng.IntN(8) {
			case 0, 1, 2, 3:
				ops[j] = 0
			case 4:
				ops[j], ops[j+1] = bufferSize>>8, 0
			case 5:
				ops[j], ops[j+1] = (bufferSize-1)>>8, 0xff
			}
		}
		t.Run(fmt.Sprintf("reader%d", i), func(t *testing.T) { compareReaders(t, data, sizes, end, ops) })
		chunk, limit := 0, 0
		if i%2 == 0 {
			chunk = 1 + rng.IntN(bufferSize)
		}
		if i%5 == 0 {
			limit = rng.IntN(4 * bufferSize)
		}
		t.Run(fmt.Sprintf("writer%d", i), func(t *testing.T) { compareWriters(t, chunk, limit, ops) })
	}
}

func FuzzBuffers(f *testing.F) {
	f.Add([]byte("\x00\x00\x05\x01\x00\x03\x02\x40\x00"), uint16(100), uint16(7))
	f.Fuzz(func(t *testing.T, ops []byte, size, chunk uint16) {
		data := bytes.Repeat([]byte("0123456789abcdef"), int(size)%(5*bufferSize/16))
		compareReaders(t, data, []int{1 + int(chunk)}, io.EOF, ops)
		compareWriters(t, int(chunk), 0, ops)
	})
}

// A reader and a writer that only see a login keep small buffers; under
// a stream of messages they grow to the full size.
func TestBuffersGrowOnlyWithUse(t *testing.T) {
	var login bytes.Buffer
	login.Write(AppendMessage(nil, 'p', []byte("md5a3556571e93b0d20722ba62be61e8c2d\x00")))
	r := NewReader(&login)
	if typ, _, err := r.ReadMessage(); err != nil || typ != 'p' {
		t.Fatalf("ReadMessage: %q %v", typ, err)
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	for range 14 {
		w.Write(AppendParameterStatus(nil, "application_name", "a fairly long application name"))
	}
	w.WriteMessage(AppendReadyForQuery(nil, TxIdle))
	if len(r.br.buf) != minBufferSize || cap(w.bw.buf) != minBufferSize {
		t.Fatalf("after a login: buffers of %d and %d bytes, want %d", len(r.br.buf), cap(w.bw.buf), minBufferSize)
	}

	var stream bytes.Buffer
	for range 1000 {
		stream.Write(AppendQuery(nil, "SELECT abalance FROM pgbench_accounts WHERE aid = 1"))
	}
	r.Reset(&stream)
	w.Reset(io.Discard)
	for {
		typ, n, err := r.PeekHeader()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if typ != 'Q' {
			t.Fatalf("message type %q", typ)
		}
		if err := r.CopyTo(w, HeaderLen+n); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.br.buf) != bufferSize || cap(w.bw.buf) != bufferSize {
		t.Fatalf("after a stream: buffers of %d and %d bytes, want %d", len(r.br.buf), cap(w.bw.buf), bufferSize)
	}
}

// BenchmarkForward passes a stream of small messages through a Reader and
// a Writer, as the goroutine engine forwards a client's pipeline.
func BenchmarkForward(b *testing.B) {
	var stream []byte
	for range 1000 {
		stream = AppendQuery(stream, "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	}
	src := bytes.NewReader(stream)
	r, w := NewReader(src), NewWriter(io.Discard)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for range b.N {
		src.Reset(stream)
		r.Reset(src)
		for {
			_, n, err := r.PeekHeader()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if err := r.CopyTo(w, HeaderLen+n); err != nil {
				b.Fatal(err)
			}
		}
		w.Flush()
	}
}
