package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgproto3/v2"
)

// AuthenticateClient authenticates a client that has sent its StartupMessage
// for user, playing the PostgreSQL server with the given method, and
// checking the answer against secret.
//
// It writes only the messages of the exchange itself (AuthenticationSASL,
// AuthenticationSASLContinue and AuthenticationSASLFinal; or
// AuthenticationMD5Password; or AuthenticationCleartextPassword). It never
// writes AuthenticationOk or an ErrorResponse: on a nil return the caller
// sends AuthenticationOk; on an error it sends the ErrorResponse, and must
// not reveal the error text to the client.
//
// A nil secret means the user is unknown. The full exchange still runs, with
// a fake plaintext secret derived from the user name and a per-process random
// key, so that the messages (including a SCRAM salt that is stable across
// attempts) do not reveal whether the user exists; then it fails with
// ErrAuthFailed. Its cost matches a user with a plaintext secret; next to
// users with stored SCRAM verifiers, which need no PBKDF2 on the server, an
// unknown user costs one PBKDF2 of 4096 iterations more (about a
// millisecond).
//
// Errors:
//   - ErrAuthFailed: wrong password or unknown user; answer SQLSTATE 28P01,
//     "password authentication failed for user ...".
//   - ErrProtocol: the client broke the protocol; answer SQLSTATE 08P01.
//   - ErrSecretUnsupported: secret cannot serve method (see Secret.Supports);
//     returned before anything is written.
//   - ErrMethodUnsupported: method is not one of the Method constants.
//   - an error wrapping io.EOF when the client hung up or sent Terminate,
//     which psql does before prompting for a password; nothing needs to be
//     sent then.
//   - errors from t, wrapped.
//
// With MethodTrust it returns nil at once, whatever secret is.
func AuthenticateClient(t Transport, method Method, user string, secret *Secret) error {
	if method == MethodTrust {
		return nil
	}
	if !method.Valid() {
		return fmt.Errorf("%w: %q", ErrMethodUnsupported, method)
	}
	var s Secret
	if secret == nil {
		s = mockSecret(user)
	} else {
		if !secret.Supports(method) {
			return fmt.Errorf("%w: %s secret for %s", ErrSecretUnsupported, secret.Kind(), method)
		}
		s = *secret
	}
	var err error
	switch method {
	case MethodSCRAM:
		err = serveSCRAM(t, user, s)
	case MethodMD5:
		err = serveMD5(t, user, s)
	case MethodPassword:
		err = servePassword(t, user, s)
	}
	if secret == nil && (err == nil || errors.Is(err, ErrAuthFailed)) {
		// err is nil only if someone guessed the fake password.
		return fmt.Errorf("%w: user does not exist", ErrAuthFailed)
	}
	return err
}

// serveSCRAM runs the server side of SCRAM-SHA-256 without channel binding.
// See https://www.postgresql.org/docs/current/sasl-authentication.html.
func serveSCRAM(t Transport, user string, s Secret) error {
	if err := send(t, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}}); err != nil {
		return err
	}
	body, err := readClientResponse(t, "SASLInitialResponse")
	if err != nil {
		return err
	}
	mechanism, data, err := parseSASLInitialResponse(body)
	if err != nil {
		return err
	}
	if mechanism != scramMechanism {
		return protocolErrorf("client selected SASL mechanism %q, which was not offered", mechanism)
	}
	first, err := parseClientFirst(data)
	if err != nil {
		return err
	}
	// Keys are derived only now, so a client that hangs up after the first
	// challenge (as psql does before prompting) costs no PBKDF2.
	keys, err := s.scramKeysFor(user)
	if err != nil {
		return err
	}
	x := &scramServerExchange{keys: keys, first: first}
	if err := send(t, &pgproto3.AuthenticationSASLContinue{Data: []byte(x.serverFirstMessage(newNonce()))}); err != nil {
		return err
	}
	body, err = readClientResponse(t, "SASLResponse")
	if err != nil {
		return err
	}
	serverFinal, err := x.verifyClientFinal(body)
	if err != nil {
		return err
	}
	return send(t, &pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)})
}

// parseSASLInitialResponse parses the body of a SASLInitialResponse:
// mechanism name, NUL, Int32 length of the data (-1 for none), data. The
// returned data aliases body.
func parseSASLInitialResponse(body []byte) (mechanism string, data []byte, err error) {
	name, rest, ok := strings.Cut(string(body), "\x00")
	if !ok || len(rest) < 4 {
		return "", nil, protocolErrorf("malformed SASLInitialResponse")
	}
	n := int32(binary.BigEndian.Uint32([]byte(rest[:4])))
	data = body[len(name)+1+4:]
	if n == -1 && len(data) == 0 {
		return name, nil, nil
	}
	if n < 0 || int(n) != len(data) {
		return "", nil, protocolErrorf("malformed SASLInitialResponse: data length %d does not match the message", n)
	}
	return name, data, nil
}

// scramServerExchange holds the server's state between the two SCRAM round
// trips.
type scramServerExchange struct {
	keys        scramKeys
	first       clientFirstMessage
	nonce       string // client nonce + server nonce
	serverFirst string
}

// serverFirstMessage records and returns the server-first-message, in
// PostgreSQL's format "r=<nonce>,s=<salt>,i=<iterations>".
func (x *scramServerExchange) serverFirstMessage(serverNonce string) string {
	x.nonce = x.first.nonce + serverNonce
	x.serverFirst = "r=" + x.nonce + ",s=" + base64.StdEncoding.EncodeToString(x.keys.salt) +
		",i=" + strconv.Itoa(x.keys.iterations)
	return x.serverFirst
}

// verifyClientFinal checks a client-final-message and returns the
// server-final-message. A wrong proof yields ErrAuthFailed; a malformed
// message, a channel-binding attribute that does not echo the GS2 header, or
// a wrong nonce yields ErrProtocol, as in PostgreSQL.
func (x *scramServerExchange) verifyClientFinal(msg []byte) (string, error) {
	m, err := parseClientFinal(msg)
	if err != nil {
		return "", err
	}
	if m.channelBinding != base64.StdEncoding.EncodeToString([]byte(x.first.gs2Header)) {
		return "", protocolErrorf("unexpected SCRAM channel-binding attribute in client-final-message")
	}
	if subtle.ConstantTimeCompare([]byte(m.nonce), []byte(x.nonce)) != 1 {
		return "", protocolErrorf("SCRAM nonce mismatch")
	}
	authMessage := x.first.bare + "," + x.serverFirst + "," + m.withoutProof
	clientSignature := hmacSHA256(x.keys.storedKey, authMessage)
	clientKey := make([]byte, scramKeyLen)
	subtle.XORBytes(clientKey, m.proof, clientSignature)
	storedKey := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(storedKey[:], x.keys.storedKey) != 1 {
		return "", ErrAuthFailed
	}
	return "v=" + base64.StdEncoding.EncodeToString(hmacSHA256(x.keys.serverKey, authMessage)), nil
}

// serveMD5 runs PostgreSQL's md5 challenge: a random 4-byte salt, answered
// by "md5" + md5hex(md5hex(password + user) + salt).
func serveMD5(t Transport, user string, s Secret) error {
	hash, err := s.md5HashFor(user)
	if err != nil {
		return err
	}
	var salt [4]byte
	_, _ = rand.Read(salt[:]) // never fails, see crypto/rand.Read
	if err := send(t, &pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
		return err
	}
	got, err := readPassword(t)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(md5Response(hash, salt))) != 1 {
		return ErrAuthFailed
	}
	return nil
}

// servePassword asks for the password in cleartext and checks it against
// any form of secret, as PostgreSQL's plain_crypt_verify does.
func servePassword(t Transport, user string, s Secret) error {
	if err := send(t, &pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return err
	}
	got, err := readPassword(t)
	if err != nil {
		return err
	}
	var ok bool
	switch s.Kind() {
	case SecretPlaintext:
		// Hash both sides so the comparison does not leak the length.
		a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.data().plaintext))
		ok = subtle.ConstantTimeCompare(a[:], b[:]) == 1
	case SecretMD5:
		ok = subtle.ConstantTimeCompare([]byte(md5PasswordHash(got, user)), []byte(s.data().md5)) == 1
	case SecretSCRAM:
		want := s.data().scram
		keys, err := deriveSCRAMKeys(got, want.salt, want.iterations)
		if err != nil {
			return err
		}
		ok = subtle.ConstantTimeCompare(keys.storedKey, want.storedKey)&
			subtle.ConstantTimeCompare(keys.serverKey, want.serverKey) == 1
	}
	if !ok {
		return ErrAuthFailed
	}
	return nil
}

// readPassword reads a PasswordMessage: a NUL-terminated string filling the
// body exactly. An empty password is an authentication failure, as in
// PostgreSQL.
func readPassword(t Transport) (string, error) {
	body, err := readClientResponse(t, "PasswordMessage")
	if err != nil {
		return "", err
	}
	pw, rest, ok := strings.Cut(string(body), "\x00")
	if !ok || rest != "" {
		return "", protocolErrorf("malformed PasswordMessage")
	}
	if pw == "" {
		return "", fmt.Errorf("%w: empty password", ErrAuthFailed)
	}
	return pw, nil
}
