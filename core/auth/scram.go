package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// SCRAM-SHA-256 as PostgreSQL implements it (src/backend/libpq/auth-scram.c,
// src/interfaces/libpq/fe-auth-scram.c), following RFC 5802 and RFC 7677.
//
// SASLprep (RFC 4013): PostgreSQL normalises passwords with SASLprep and uses
// the raw bytes when that fails. This package always uses the raw bytes. For
// ASCII passwords that is exactly what PostgreSQL does (SASLprep leaves
// printable ASCII unchanged and rejects control characters, which makes
// PostgreSQL fall back to the raw bytes too). A non-ASCII password matches
// PostgreSQL only if SASLprep would leave it unchanged, which is the case for
// ordinary NFKC-normalised text without mapped or prohibited characters.

const (
	scramMechanism = "SCRAM-SHA-256"

	// DefaultSCRAMIterations is the PBKDF2 iteration count PostgreSQL uses
	// by default (scram_iterations), and the one NewSCRAMVerifier uses for 0.
	DefaultSCRAMIterations = 4096

	// maxSCRAMIterations bounds the iteration count accepted from a verifier
	// or from a server, so a hostile server cannot make Sluice burn seconds of
	// CPU that no deadline interrupts.
	maxSCRAMIterations = 1 << 24

	scramSaltLen  = 16 // bytes, as PostgreSQL's SCRAM_DEFAULT_SALT_LEN
	scramNonceLen = 18 // random bytes, as PostgreSQL's SCRAM_RAW_NONCE_LEN
	scramKeyLen   = sha256.Size
)

// scramKeys is what a SCRAM-SHA-256 server stores about a password.
type scramKeys struct {
	iterations int
	salt       []byte
	storedKey  []byte
	serverKey  []byte
}

// deriveSCRAMKeys computes the verifier keys of password (RFC 5802 section 3).
func deriveSCRAMKeys(password string, salt []byte, iterations int) (scramKeys, error) {
	salted, err := saltedPassword(password, salt, iterations)
	if err != nil {
		return scramKeys{}, err
	}
	stored := sha256.Sum256(hmacSHA256(salted, "Client Key"))
	return scramKeys{
		iterations: iterations,
		salt:       salt,
		storedKey:  stored[:],
		serverKey:  hmacSHA256(salted, "Server Key"),
	}, nil
}

// saltedPassword is Hi(password, salt, iterations), that is PBKDF2 with
// HMAC-SHA-256.
func saltedPassword(password string, salt []byte, iterations int) ([]byte, error) {
	k, err := pbkdf2.Key(sha256.New, password, salt, iterations, scramKeyLen)
	if err != nil {
		return nil, fmt.Errorf("auth: deriving SCRAM salted password: %w", err)
	}
	return k, nil
}

// hmacSHA256 returns HMAC-SHA-256 under key of the concatenation of parts.
func hmacSHA256(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// newNonce returns scramNonceLen random bytes in base64, as PostgreSQL and
// libpq generate nonces.
func newNonce() string {
	b := make([]byte, scramNonceLen)
	_, _ = rand.Read(b) // never fails, see crypto/rand.Read
	return base64.StdEncoding.EncodeToString(b)
}

// decodeBase64 decodes standard, padded base64, rejecting the line breaks
// and non-zero padding bits that encoding/base64 would otherwise tolerate.
func decodeBase64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, fmt.Errorf("invalid base64 character at offset %d", i)
		}
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// validNonce reports whether s is a non-empty run of printable ASCII without
// commas, as RFC 5802 requires of c-nonce and s-nonce.
func validNonce(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == ',' {
			return false
		}
	}
	return true
}

// validExtension reports whether a is an attribute "x=..." with a letter as
// its name, the form of RFC 5802 extensions, which are otherwise ignored.
func validExtension(a string) bool {
	if len(a) < 2 || a[1] != '=' {
		return false
	}
	c := a[0]
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// checkSASLMessage applies the checks every SCRAM message gets before it is
// parsed: not empty, not oversized, no NUL byte (PostgreSQL treats SCRAM
// messages as C strings and rejects embedded NULs).
func checkSASLMessage(msg []byte, what string) error {
	switch {
	case len(msg) == 0:
		return protocolErrorf("empty SCRAM %s", what)
	case len(msg) > maxAuthMessage:
		return protocolErrorf("SCRAM %s of %d bytes exceeds the limit of %d", what, len(msg), maxAuthMessage)
	case strings.IndexByte(string(msg), 0) >= 0:
		return protocolErrorf("SCRAM %s contains a NUL byte", what)
	}
	return nil
}

// clientFirstMessage is a parsed client-first-message.
type clientFirstMessage struct {
	gs2Header string // "n,," or "y,,"
	bare      string // client-first-message-bare, part of AuthMessage
	nonce     string
}

// parseClientFirst parses a client-first-message for a server that offered
// SCRAM-SHA-256 without -PLUS:
//
//	gs2-header = ("n" / "y") "," "," ; no channel binding, no authzid
//	bare       = "n=" username "," "r=" c-nonce *("," extension)
//
// The username is ignored, as PostgreSQL ignores it in favour of the
// StartupMessage's. Mandatory extensions ("m=") and authzid ("a=") are
// rejected like PostgreSQL does. Errors wrap ErrProtocol.
func parseClientFirst(msg []byte) (clientFirstMessage, error) {
	var m clientFirstMessage
	if err := checkSASLMessage(msg, "client-first-message"); err != nil {
		return m, err
	}
	s := string(msg)
	switch {
	case strings.HasPrefix(s, "p="):
		return m, protocolErrorf("client selected SCRAM channel binding, which was not offered")
	case !strings.HasPrefix(s, "n,") && !strings.HasPrefix(s, "y,"):
		return m, protocolErrorf("malformed SCRAM client-first-message: unexpected channel-binding flag")
	case strings.HasPrefix(s[2:], "a="):
		return m, protocolErrorf("SCRAM authorization identity is not supported")
	case !strings.HasPrefix(s[2:], ","):
		return m, protocolErrorf("malformed SCRAM client-first-message: bad GS2 header")
	}
	m.gs2Header, m.bare = s[:3], s[3:]

	attrs := strings.Split(m.bare, ",")
	switch {
	case strings.HasPrefix(attrs[0], "m="):
		return m, protocolErrorf("client requires an unsupported SCRAM extension")
	case !strings.HasPrefix(attrs[0], "n="):
		return m, protocolErrorf("malformed SCRAM client-first-message: username attribute expected")
	case len(attrs) < 2 || !strings.HasPrefix(attrs[1], "r="):
		return m, protocolErrorf("malformed SCRAM client-first-message: nonce attribute expected")
	}
	m.nonce = attrs[1][len("r="):]
	if !validNonce(m.nonce) {
		return m, protocolErrorf("malformed SCRAM client-first-message: invalid nonce")
	}
	for _, a := range attrs[2:] {
		if !validExtension(a) {
			return m, protocolErrorf("malformed SCRAM client-first-message: invalid attribute")
		}
	}
	return m, nil
}

// clientFinalMessage is a parsed client-final-message.
type clientFinalMessage struct {
	channelBinding string // base64 of the GS2 header
	nonce          string
	withoutProof   string // client-final-message-without-proof, part of AuthMessage
	proof          []byte
}

// parseClientFinal parses a client-final-message:
//
//	"c=" base64 "," "r=" nonce *("," extension) "," "p=" base64(32 bytes)
//
// The proof must come last. Errors wrap ErrProtocol.
func parseClientFinal(msg []byte) (clientFinalMessage, error) {
	var m clientFinalMessage
	if err := checkSASLMessage(msg, "client-final-message"); err != nil {
		return m, err
	}
	s := string(msg)
	attrs := strings.Split(s, ",")
	if len(attrs) < 3 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return m, protocolErrorf("malformed SCRAM client-final-message: channel binding and nonce expected")
	}
	m.channelBinding = attrs[0][len("c="):]
	m.nonce = attrs[1][len("r="):]
	if !validNonce(m.nonce) {
		return m, protocolErrorf("malformed SCRAM client-final-message: invalid nonce")
	}
	last := attrs[len(attrs)-1]
	for _, a := range attrs[2 : len(attrs)-1] {
		if !validExtension(a) || a[0] == 'p' {
			return m, protocolErrorf("malformed SCRAM client-final-message: invalid attribute before proof")
		}
	}
	if !strings.HasPrefix(last, "p=") {
		return m, protocolErrorf("malformed SCRAM client-final-message: proof must be the last attribute")
	}
	proof, err := decodeBase64(last[len("p="):])
	if err != nil || len(proof) != scramKeyLen {
		return m, protocolErrorf("malformed SCRAM client-final-message: invalid proof")
	}
	m.proof = proof
	m.withoutProof = s[:len(s)-len(last)-1]
	return m, nil
}

// serverFirstMessage is a parsed server-first-message.
type serverFirstMessage struct {
	nonce      string
	salt       []byte
	iterations int
}

// parseServerFirst parses a server-first-message sent in answer to a
// client-first-message carrying clientNonce:
//
//	"r=" c-nonce s-nonce "," "s=" base64 "," "i=" iterations *("," extension)
//
// The nonce must extend clientNonce. Errors wrap ErrProtocol.
func parseServerFirst(msg []byte, clientNonce string) (serverFirstMessage, error) {
	var m serverFirstMessage
	if err := checkSASLMessage(msg, "server-first-message"); err != nil {
		return m, err
	}
	attrs := strings.Split(string(msg), ",")
	if strings.HasPrefix(attrs[0], "m=") {
		return m, protocolErrorf("server requires an unsupported SCRAM extension")
	}
	if len(attrs) < 3 || !strings.HasPrefix(attrs[0], "r=") || !strings.HasPrefix(attrs[1], "s=") || !strings.HasPrefix(attrs[2], "i=") {
		return m, protocolErrorf("malformed SCRAM server-first-message")
	}
	m.nonce = attrs[0][len("r="):]
	if !validNonce(m.nonce) || len(m.nonce) <= len(clientNonce) || !strings.HasPrefix(m.nonce, clientNonce) {
		return m, protocolErrorf("SCRAM server nonce does not extend the client nonce")
	}
	salt, err := decodeBase64(attrs[1][len("s="):])
	if err != nil || len(salt) == 0 {
		return m, protocolErrorf("malformed SCRAM server-first-message: invalid salt")
	}
	m.salt = salt
	m.iterations, err = parseIterations(attrs[2][len("i="):])
	if err != nil {
		return m, protocolErrorf("malformed SCRAM server-first-message: %v", err)
	}
	for _, a := range attrs[3:] {
		if !validExtension(a) {
			return m, protocolErrorf("malformed SCRAM server-first-message: invalid attribute")
		}
	}
	return m, nil
}

// parseServerFinal parses a server-final-message, "v=" base64(32 bytes) or
// "e=" error, and returns the server signature. An "e=" message yields an
// error wrapping ErrAuthFailed; malformed messages wrap ErrProtocol.
func parseServerFinal(msg []byte) ([]byte, error) {
	if err := checkSASLMessage(msg, "server-final-message"); err != nil {
		return nil, err
	}
	attrs := strings.Split(string(msg), ",")
	if e, ok := strings.CutPrefix(attrs[0], "e="); ok {
		return nil, fmt.Errorf("%w: server reported SCRAM error %q", ErrAuthFailed, e)
	}
	v, ok := strings.CutPrefix(attrs[0], "v=")
	if !ok {
		return nil, protocolErrorf("malformed SCRAM server-final-message")
	}
	sig, err := decodeBase64(v)
	if err != nil || len(sig) != scramKeyLen {
		return nil, protocolErrorf("malformed SCRAM server-final-message: invalid signature")
	}
	for _, a := range attrs[1:] {
		if !validExtension(a) {
			return nil, protocolErrorf("malformed SCRAM server-final-message: invalid attribute")
		}
	}
	return sig, nil
}

// saslNameEscape escapes a user name for the "n=" attribute (RFC 5802
// section 5.1).
func saslNameEscape(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}
