package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Request codes of the packets a client may send before the message stream.
// See https://www.postgresql.org/docs/15/protocol-message-formats.html.
const (
	ProtocolVersion3 uint32 = 3 << 16
	codeCancel       uint32 = 80877102
	codeSSL          uint32 = 80877103
	codeGSSENC       uint32 = 80877104
)

// maxStartupLen bounds a startup packet, as PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
const maxStartupLen = 10000

// ErrStartupTooLarge and friends describe startup packets Sluice refuses.
var (
	ErrStartupTooLarge     = errors.New("startup packet too large")
	ErrStartupInvalid      = errors.New("invalid startup packet")
	ErrUnsupportedProtocol = errors.New("unsupported frontend protocol")
)

// StartupKind says which packet ReadStartup read.
type StartupKind int

// The kinds of startup packet.
const (
	KindStartup StartupKind = iota + 1
	KindSSLRequest
	KindGSSENCRequest
	KindCancel
)

// Startup is a decoded startup packet. For KindStartup, Params holds the
// parameters in the order sent (user, database, options, GUCs); for
// KindCancel, ProcessID and SecretKey hold the key.
type Startup struct {
	Kind          StartupKind
	ProtocolMinor uint16
	Params        []Param
	ProcessID     uint32
	SecretKey     uint32
}

// Param is one name/value pair of a StartupMessage.
type Param struct{ Name, Value string }

// Get returns the value of the named parameter and whether it was sent.
func (s *Startup) Get(name string) (string, bool) {
	for _, p := range s.Params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// ReadStartup reads one startup packet from r with exact reads and no
// buffering, so that no byte beyond the packet is consumed: after an
// SSLRequest the next bytes must belong to the TLS handshake, and bytes a
// client sent early are never processed as if they had been encrypted.
func ReadStartup(r io.Reader) (*Startup, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 8 {
		return nil, fmt.Errorf("%w: length %d", ErrStartupInvalid, n)
	}
	if n > maxStartupLen {
		return nil, ErrStartupTooLarge
	}
	code := binary.BigEndian.Uint32(hdr[4:])
	body := make([]byte, n-8)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	switch code {
	case codeSSL, codeGSSENC:
		if len(body) != 0 {
			return nil, fmt.Errorf("%w: request with a body", ErrStartupInvalid)
		}
		if code == codeSSL {
			return &Startup{Kind: KindSSLRequest}, nil
		}
		return &Startup{Kind: KindGSSENCRequest}, nil
	case codeCancel:
		if len(body) != 8 {
			return nil, fmt.Errorf("%w: cancel request of %d bytes", ErrStartupInvalid, n)
		}
		return &Startup{
			Kind:      KindCancel,
			ProcessID: binary.BigEndian.Uint32(body[:4]),
			SecretKey: binary.BigEndian.Uint32(body[4:]),
		}, nil
	}
	if code>>16 != 3 {
		return nil, fmt.Errorf("%w %d.%d", ErrUnsupportedProtocol, code>>16, code&0xffff)
	}
	s := &Startup{Kind: KindStartup, ProtocolMinor: uint16(code & 0xffff)}
	for len(body) > 0 {
		if body[0] == 0 {
			if len(body) != 1 {
				return nil, fmt.Errorf("%w: data after the terminator", ErrStartupInvalid)
			}
			return s, nil
		}
		name, rest, ok := cutNul(body)
		if !ok {
			return nil, fmt.Errorf("%w: unterminated parameter name", ErrStartupInvalid)
		}
		value, rest, ok := cutNul(rest)
		if !ok {
			return nil, fmt.Errorf("%w: parameter %q has no terminated value", ErrStartupInvalid, name)
		}
		s.Params = append(s.Params, Param{Name: name, Value: value})
		body = rest
	}
	return nil, fmt.Errorf("%w: missing terminator", ErrStartupInvalid)
}

func cutNul(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// EncodeStartup appends a protocol 3.0 StartupMessage with params to dst.
func EncodeStartup(dst []byte, params []Param) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, ProtocolVersion3)
	for _, p := range params {
		dst = append(dst, p.Name...)
		dst = append(dst, 0)
		dst = append(dst, p.Value...)
		dst = append(dst, 0)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// EncodeCancel returns a CancelRequest packet for the given key.
func EncodeCancel(pid, secret uint32) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b, 16)
	binary.BigEndian.PutUint32(b[4:], codeCancel)
	binary.BigEndian.PutUint32(b[8:], pid)
	binary.BigEndian.PutUint32(b[12:], secret)
	return b
}

// EncodeSSLRequest returns an SSLRequest packet, which asks a server to
// switch the connection to TLS. The server answers with the single byte
// 'S' (go ahead with the TLS handshake) or 'N' (continue in plaintext).
func EncodeSSLRequest() []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, 8)
	binary.BigEndian.PutUint32(b[4:], codeSSL)
	return b
}

// ParseOptions splits the value of the "options" startup parameter into the
// settings it carries ("-c name=value", "-cname=value" and "--name=value"),
// honouring backslash escapes of spaces as PostgreSQL does. Words that are
// not settings are reported in the error.
func ParseOptions(opts string) ([]Param, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(opts); i++ {
		c := opts[i]
		switch {
		case c == '\\' && i+1 < len(opts):
			i++
			cur.WriteByte(opts[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	var out []Param
	for i := 0; i < len(words); i++ {
		w := words[i]
		var set string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			set = words[i]
		case strings.HasPrefix(w, "-c"):
			set = w[2:]
		case strings.HasPrefix(w, "--"):
			set = w[2:]
		default:
			return nil, fmt.Errorf("unsupported option %q in \"options\"", w)
		}
		name, value, ok := strings.Cut(set, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("option %q needs the form name=value", set)
		}
		out = append(out, Param{Name: strings.ReplaceAll(name, "-", "_"), Value: value})
	}
	return out, nil
}
