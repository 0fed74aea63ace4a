package auth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SecretKind tells which form a Secret holds.
type SecretKind int

// The forms a Secret can take.
const (
	// SecretPlaintext is a password in the clear.
	SecretPlaintext SecretKind = iota + 1
	// SecretMD5 is "md5" followed by the hex md5 of password+username.
	SecretMD5
	// SecretSCRAM is a SCRAM-SHA-256 verifier as stored in pg_authid.
	SecretSCRAM
)

// String returns the name of the form, for logs.
func (k SecretKind) String() string {
	switch k {
	case SecretPlaintext:
		return "plaintext"
	case SecretMD5:
		return "md5"
	case SecretSCRAM:
		return "scram-sha-256"
	}
	return "invalid"
}

// Secret is what Sluice knows about a user's password: the password itself,
// its PostgreSQL md5 hash, or its SCRAM-SHA-256 verifier. Build one with
// ParseSecret; the zero value holds nothing and supports no method but
// trust. A Secret is immutable and safe for concurrent use. It never prints
// its contents, even nested inside another value printed with %v.
type Secret struct {
	// get hides the secret behind a function because fmt prints a function
	// as an address with every verb, even when it reaches the field by
	// reflection (a Secret in an unexported field of a printed struct).
	get func() *secretData
}

type secretData struct {
	kind      SecretKind
	plaintext string    // SecretPlaintext
	md5       string    // SecretMD5: "md5" + 32 lowercase hex digits
	scram     scramKeys // SecretSCRAM
}

// ParseSecret detects the form of s the way PostgreSQL does for a password
// given to CREATE ROLE: "md5" followed by exactly 32 lowercase hex digits is
// an md5 hash, a string starting with "SCRAM-SHA-256$" is a SCRAM-SHA-256
// verifier ("SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
// base64), anything else is a plaintext password. Unlike PostgreSQL, which
// hashes a malformed verifier as if it were a password, ParseSecret returns
// an error wrapping ErrMalformedSecret, since in a proxy's configuration that
// is almost surely a copy-and-paste mistake. An empty s is an error too.
// Errors never contain s.
func ParseSecret(s string) (Secret, error) {
	switch {
	case s == "":
		return Secret{}, fmt.Errorf("%w: empty password", ErrMalformedSecret)
	case isMD5Hash(s):
		return newSecret(&secretData{kind: SecretMD5, md5: s}), nil
	case strings.HasPrefix(s, scramVerifierPrefix):
		keys, err := parseSCRAMVerifier(s)
		if err != nil {
			return Secret{}, err
		}
		return newSecret(&secretData{kind: SecretSCRAM, scram: keys}), nil
	}
	return newSecret(&secretData{kind: SecretPlaintext, plaintext: s}), nil
}

func newSecret(d *secretData) Secret {
	return Secret{get: func() *secretData { return d }}
}

// data returns the secret's contents, or nil for the zero Secret.
func (s Secret) data() *secretData {
	if s.get == nil {
		return nil
	}
	return s.get()
}

// Kind returns the form of the secret, or 0 for the zero Secret.
func (s Secret) Kind() SecretKind {
	if d := s.data(); d != nil {
		return d.kind
	}
	return 0
}

// Supports reports whether AuthenticateClient can verify a client with method
// m against this secret. Plaintext supports every method; an md5 hash
// supports md5 and password; a SCRAM verifier supports scram-sha-256 and
// password. Configuration validation can call it to reject an impossible
// pairing up front.
func (s Secret) Supports(m Method) bool {
	switch m {
	case MethodTrust:
		return true
	case MethodPassword:
		return s.data() != nil
	case MethodMD5:
		return s.Kind() == SecretPlaintext || s.Kind() == SecretMD5
	case MethodSCRAM:
		return s.Kind() == SecretPlaintext || s.Kind() == SecretSCRAM
	}
	return false
}

// String describes the form of the secret without revealing it.
func (s Secret) String() string {
	return "auth.Secret(" + s.Kind().String() + ")"
}

// GoString describes the form of the secret without revealing it, for %#v.
func (s Secret) GoString() string { return s.String() }

// scramKeysFor returns the SCRAM-SHA-256 keys to check user's proof against.
// A plaintext password is salted with a salt derived from the process key and
// the user name, so that, like a stored verifier or an unknown user, it
// shows a client the same salt on every attempt during the process lifetime.
func (s Secret) scramKeysFor(user string) (scramKeys, error) {
	switch s.Kind() {
	case SecretSCRAM:
		return s.data().scram, nil
	case SecretPlaintext:
		salt := keyedHash("scram salt", user)[:scramSaltLen]
		return deriveSCRAMKeys(s.data().plaintext, salt, DefaultSCRAMIterations)
	}
	return scramKeys{}, fmt.Errorf("%w: %s secret for %s", ErrSecretUnsupported, s.Kind(), MethodSCRAM)
}

// md5HashFor returns the md5 hash ("md5" + hex) of user's password.
func (s Secret) md5HashFor(user string) (string, error) {
	switch s.Kind() {
	case SecretMD5:
		return s.data().md5, nil
	case SecretPlaintext:
		return md5PasswordHash(s.data().plaintext, user), nil
	}
	return "", fmt.Errorf("%w: %s secret for %s", ErrSecretUnsupported, s.Kind(), MethodMD5)
}

// mockSecret returns the fake secret used for a user who does not exist: a
// plaintext password derived from the process key and the user name, so
// that every method runs the same exchange, with the same cost, as for a
// user with a plaintext secret.
func mockSecret(user string) Secret {
	pw := hex.EncodeToString(keyedHash("mock password", user))
	return newSecret(&secretData{kind: SecretPlaintext, plaintext: pw})
}

// keyedHash returns HMAC-SHA-256 keyed with the process key over a purpose
// label and a user name.
func keyedHash(purpose, user string) []byte {
	return hmacSHA256(processKey(), purpose, "\x00", user)
}

// isMD5Hash reports whether s has the form PostgreSQL treats as an md5 hash.
func isMD5Hash(s string) bool {
	if len(s) != 35 || !strings.HasPrefix(s, "md5") {
		return false
	}
	for i := 3; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ResolveReference turns a password reference from the configuration into
// the password (or hash, or verifier) it names:
//
//   - "env:NAME" is the value of environment variable NAME, looked up with
//     getenv (os.Getenv if getenv is nil);
//   - "file:/path" is the content of the file, without trailing newlines;
//   - anything else is a literal and is returned as it is.
//
// An unset or empty variable, or an empty file, yields an error wrapping
// ErrEmptyReference. Errors name the variable or file, never the value.
func ResolveReference(ref string, getenv func(string) string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		if name == "" {
			return "", fmt.Errorf("%w: %q names no environment variable", ErrEmptyReference, ref)
		}
		if getenv == nil {
			getenv = os.Getenv
		}
		v := getenv(name)
		if v == "" {
			return "", fmt.Errorf("%w: environment variable %s is unset or empty", ErrEmptyReference, name)
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		path := strings.TrimPrefix(ref, "file:")
		if path == "" {
			return "", fmt.Errorf("%w: %q names no file", ErrEmptyReference, ref)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("auth: reading password file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("%w: file %s is empty", ErrEmptyReference, path)
		}
		return v, nil
	}
	return ref, nil
}

// NewSCRAMVerifier returns the SCRAM-SHA-256 verifier of password, in the
// form PostgreSQL stores in pg_authid and accepts in CREATE ROLE ... PASSWORD,
// with a random 16-byte salt. iterations of 0 means DefaultSCRAMIterations.
// Like PostgreSQL the password should be SASLprep-normalised first; this
// package uses it as it is, which is identical for ASCII passwords (see
// AuthenticateToServer).
func NewSCRAMVerifier(password string, iterations int) (string, error) {
	if password == "" {
		return "", fmt.Errorf("%w: empty password", ErrMalformedSecret)
	}
	if iterations == 0 {
		iterations = DefaultSCRAMIterations
	}
	if iterations < 1 || iterations > maxSCRAMIterations {
		return "", fmt.Errorf("auth: SCRAM iteration count %d out of range 1..%d", iterations, maxSCRAMIterations)
	}
	salt := make([]byte, scramSaltLen)
	_, _ = rand.Read(salt) // never fails, see crypto/rand.Read
	keys, err := deriveSCRAMKeys(password, salt, iterations)
	if err != nil {
		return "", err
	}
	return keys.verifier(), nil
}

const scramVerifierPrefix = "SCRAM-SHA-256$"

// verifier formats k as PostgreSQL does in scram_build_secret.
func (k scramKeys) verifier() string {
	b64 := base64.StdEncoding.EncodeToString
	return scramVerifierPrefix + strconv.Itoa(k.iterations) + ":" + b64(k.salt) +
		"$" + b64(k.storedKey) + ":" + b64(k.serverKey)
}

// parseSCRAMVerifier parses "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"
// like PostgreSQL's parse_scram_secret, but also bounds the iteration count.
func parseSCRAMVerifier(s string) (scramKeys, error) {
	bad := func(what string) (scramKeys, error) {
		return scramKeys{}, fmt.Errorf("%w: SCRAM-SHA-256 verifier: %s", ErrMalformedSecret, what)
	}
	rest := strings.TrimPrefix(s, scramVerifierPrefix)
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return bad(`want "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"`)
	}
	iterStr, saltStr, ok1 := strings.Cut(params, ":")
	storedStr, serverStr, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return bad(`want "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"`)
	}
	iterations, err := parseIterations(iterStr)
	if err != nil {
		return bad(err.Error())
	}
	salt, err := decodeBase64(saltStr)
	if err != nil || len(salt) == 0 {
		return bad("salt is not base64")
	}
	stored, err := decodeBase64(storedStr)
	if err != nil || len(stored) != scramKeyLen {
		return bad("StoredKey is not 32 bytes of base64")
	}
	server, err := decodeBase64(serverStr)
	if err != nil || len(server) != scramKeyLen {
		return bad("ServerKey is not 32 bytes of base64")
	}
	return scramKeys{iterations: iterations, salt: salt, storedKey: stored, serverKey: server}, nil
}

// parseIterations parses a SCRAM iteration count: decimal digits only, in
// 1..maxSCRAMIterations.
func parseIterations(s string) (int, error) {
	if s == "" || len(s) > 9 {
		return 0, fmt.Errorf("iteration count must be 1..%d", maxSCRAMIterations)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("iteration count must be 1..%d", maxSCRAMIterations)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxSCRAMIterations {
		return 0, fmt.Errorf("iteration count must be 1..%d", maxSCRAMIterations)
	}
	return n, nil
}
