package auth

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgproto3/v2"
)

// pipeTransport frames messages over one end of a net.Pipe: a type byte, a
// big-endian int32 length that counts itself, then the body.
type pipeTransport struct {
	conn net.Conn
	hdr  [5]byte
	buf  []byte
}

func (p *pipeTransport) ReadMessage() (byte, []byte, error) {
	if _, err := io.ReadFull(p.conn, p.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(p.hdr[1:])) - 4
	if n < 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("bad message length %d", n+4)
	}
	p.buf = slices.Grow(p.buf[:0], n)[:n]
	if _, err := io.ReadFull(p.conn, p.buf); err != nil {
		return 0, nil, err
	}
	return p.hdr[0], p.buf, nil
}

func (p *pipeTransport) WriteMessage(b []byte) error {
	_, err := p.conn.Write(b)
	return err
}

// newPipe returns the two ends of a connected pair of transports, closed at
// the end of the test.
func newPipe(t *testing.T) (server, client *pipeTransport) {
	t.Helper()
	a, b := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	t.Cleanup(func() { a.Close(); b.Close() })
	return &pipeTransport{conn: a}, &pipeTransport{conn: b}
}

// recordingTransport remembers every message written through it and can
// rewrite or drop Authentication messages on their way out.
type recordingTransport struct {
	Transport
	written [][]byte
	// rewrite, if set, gets each Authentication request's code and data and
	// returns the data to send instead, or keep == false to drop it.
	rewrite func(code uint32, data []byte) (newData []byte, keep bool)
}

func (r *recordingTransport) WriteMessage(b []byte) error {
	r.written = append(r.written, slices.Clone(b))
	if r.rewrite != nil && len(b) >= 9 && b[0] == msgAuthentication {
		code := binary.BigEndian.Uint32(b[5:9])
		data, keep := r.rewrite(code, slices.Clone(b[9:]))
		if !keep {
			return nil
		}
		b = authMessage(code, data)
	}
	return r.Transport.WriteMessage(b)
}

// authCodes lists the Authentication request codes written, and 'E'/'?' for
// other messages, for comparing exchanges.
func (r *recordingTransport) authCodes() []string {
	var codes []string
	for _, m := range r.written {
		if m[0] == msgAuthentication {
			codes = append(codes, fmt.Sprint(binary.BigEndian.Uint32(m[5:9])))
		} else {
			codes = append(codes, string(m[0]))
		}
	}
	return codes
}

// authMessage encodes an Authentication message with the given code and data.
func authMessage(code uint32, data []byte) []byte {
	b := []byte{msgAuthentication, 0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, code)
	b = append(b, data...)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

// exchange is the outcome of one AuthenticateClient/AuthenticateToServer run.
type exchange struct {
	serverErr, clientErr error
	server               *recordingTransport
}

// runExchange runs AuthenticateClient against AuthenticateToServer over a
// pipe. The server goroutine plays the caller too: AuthenticationOk on
// success, an ErrorResponse otherwise. rewrite, if not nil, tampers with the
// server's Authentication messages.
func runExchange(t *testing.T, method Method, user string, secret *Secret, password string,
	rewrite func(uint32, []byte) ([]byte, bool)) exchange {
	t.Helper()
	srvPipe, cliPipe := newPipe(t)
	srv := &recordingTransport{Transport: srvPipe, rewrite: rewrite}
	done := make(chan error, 1)
	go func() {
		err := AuthenticateClient(srv, method, user, secret)
		var reply encoder = &pgproto3.AuthenticationOk{}
		switch {
		case errors.Is(err, ErrAuthFailed):
			reply = &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01",
				Message: fmt.Sprintf("password authentication failed for user %q", user)}
		case err != nil:
			reply = &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28000", Message: "authentication failed"}
		}
		_ = send(srv, reply) // fails harmlessly if the client has gone
		done <- err
	}()
	clientErr := AuthenticateToServer(cliPipe, user, password)
	cliPipe.conn.Close() // unblock the server if it still waits for the client
	serverErr := <-done
	return exchange{serverErr: serverErr, clientErr: clientErr, server: srv}
}

// scriptTransport plays a peer from a script: each ReadMessage calls next
// with everything written so far.
type scriptTransport struct {
	written [][]byte
	next    func(written [][]byte) (byte, []byte, error)
}

func (s *scriptTransport) ReadMessage() (byte, []byte, error) { return s.next(s.written) }

func (s *scriptTransport) WriteMessage(b []byte) error {
	s.written = append(s.written, slices.Clone(b))
	return nil
}

// messages returns a script that delivers msgs in order, then io.EOF.
func messages(msgs ...[]byte) func([][]byte) (byte, []byte, error) {
	i := 0
	return func([][]byte) (byte, []byte, error) {
		if i == len(msgs) {
			return 0, nil, io.EOF
		}
		m := msgs[i]
		i++
		return m[0], m[5:], nil
	}
}

// encode encodes a pgproto3 message for scripts.
func encode(t testing.TB, m encoder) []byte {
	t.Helper()
	b, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// raw builds a message with an arbitrary type and body.
func raw(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}
