// Package auth runs PostgreSQL password authentication in both directions
// for Sluice.
//
// Towards clients Sluice plays the PostgreSQL server: AuthenticateClient
// challenges a client that has sent its StartupMessage and checks its answer
// against a Secret. Towards PostgreSQL Sluice plays the client:
// AuthenticateToServer answers whatever challenge the server chooses.
//
// Supported methods are SCRAM-SHA-256 (RFC 5802, RFC 7677, without channel
// binding), md5, cleartext password and trust, as described in
// https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP
// and https://www.postgresql.org/docs/current/sasl-authentication.html.
//
// Both directions speak through a Transport, which moves whole protocol
// messages. Nothing in this package logs; errors never contain passwords,
// hashes or SCRAM material.
package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Transport moves whole protocol messages after the startup message. It is
// implemented by core/wire. The functions in this package use a Transport
// from a single goroutine and never retain it after they return.
type Transport interface {
	// ReadMessage returns the next message's type byte and body (without the
	// 5-byte header). body is valid only until the next ReadMessage call.
	ReadMessage() (typ byte, body []byte, err error)
	// WriteMessage writes one or more fully encoded messages (with headers)
	// and flushes.
	WriteMessage(b []byte) error
}

// Method is a client authentication method, named as in pg_hba.conf.
type Method string

// The authentication methods AuthenticateClient supports.
const (
	// MethodSCRAM is SCRAM-SHA-256 without channel binding.
	MethodSCRAM Method = "scram-sha-256"
	// MethodMD5 is the salted md5 challenge-response of PostgreSQL.
	MethodMD5 Method = "md5"
	// MethodTrust accepts the client without any exchange.
	MethodTrust Method = "trust"
	// MethodPassword asks for the password in cleartext; use it only over TLS.
	MethodPassword Method = "password"
)

// Valid reports whether m is one of the methods this package implements.
func (m Method) Valid() bool {
	switch m {
	case MethodSCRAM, MethodMD5, MethodTrust, MethodPassword:
		return true
	}
	return false
}

var (
	// ErrAuthFailed means the password was wrong or the user is unknown. On
	// the server side the caller should answer with SQLSTATE 28P01
	// ("password authentication failed for user ..."); on the client side it
	// means the server rejected the SCRAM exchange.
	ErrAuthFailed = errors.New("auth: password authentication failed")
	// ErrProtocol means the peer broke the authentication protocol (wrong
	// message type, malformed or oversized message). On the server side the
	// caller should answer with SQLSTATE 08P01.
	ErrProtocol = errors.New("auth: protocol violation")
	// ErrSecretUnsupported means the stored secret cannot serve the requested
	// method, such as an md5 hash for SCRAM-SHA-256.
	ErrSecretUnsupported = errors.New("auth: secret cannot be used with this authentication method")
	// ErrMethodUnsupported means an authentication method this package does
	// not implement was asked for, by configuration or by the server.
	ErrMethodUnsupported = errors.New("auth: authentication method not supported")
	// ErrMalformedSecret means a secret or verifier string could not be parsed.
	ErrMalformedSecret = errors.New("auth: malformed secret")
	// ErrEmptyReference means a password reference resolved to nothing: an
	// unset or empty environment variable, or an empty file.
	ErrEmptyReference = errors.New("auth: password reference is empty")
	// ErrServerSignature means a server finished SCRAM without proving that it
	// knows the password; the connection must not be used.
	ErrServerSignature = errors.New("auth: server SCRAM signature does not match")
	// ErrPasswordRequired means the server asked for a password and none was
	// configured.
	ErrPasswordRequired = errors.New("auth: server requested a password but none is configured")
)

// Message types and authentication request codes, from
// https://www.postgresql.org/docs/current/protocol-message-formats.html.
const (
	msgAuthentication byte = 'R'
	msgPassword       byte = 'p' // PasswordMessage, SASLInitialResponse, SASLResponse
	msgErrorResponse  byte = 'E'
	msgNotice         byte = 'N'
	msgTerminate      byte = 'X'

	authOK                = 0
	authKerberosV5        = 2
	authCleartextPassword = 3
	authMD5Password       = 5
	authSCMCredential     = 6
	authGSS               = 7
	authGSSContinue       = 8
	authSSPI              = 9
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// maxAuthMessage bounds every authentication message a client sends and every
// SASL message a server sends. Real messages are far smaller (a SCRAM
// client-final-message is about 110 bytes); the bound keeps parsing of
// untrusted input cheap and simple, an area where PgBouncer has shipped
// security fixes.
const maxAuthMessage = 1024

// processKey returns a random key generated once per process. It derives the
// fake secret used for unknown users and the SCRAM salt used for plaintext
// secrets, so repeated attempts see stable values without anything being
// configured or stored. It is the only package-level state and is immutable
// once created.
var processKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails, see crypto/rand.Read
	return k
})

// encoder is any pgproto3 message.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// send encodes msg and writes it through t.
func send(t Transport, msg encoder) error {
	b, err := msg.Encode(nil)
	if err != nil {
		return fmt.Errorf("auth: encoding message: %w", err)
	}
	if err := t.WriteMessage(b); err != nil {
		return fmt.Errorf("auth: writing message: %w", err)
	}
	return nil
}

// readClientResponse reads the client's next message, which must be a
// PasswordMessage-family message ('p') of at most maxAuthMessage bytes. what
// names the expected message for errors. A client that terminates or hangs
// up yields an error wrapping io.EOF.
func readClientResponse(t Transport, what string) ([]byte, error) {
	typ, body, err := t.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("auth: reading %s: %w", what, err)
	}
	switch {
	case typ == msgTerminate:
		return nil, fmt.Errorf("auth: client terminated instead of sending %s: %w", what, io.EOF)
	case typ != msgPassword:
		return nil, fmt.Errorf("%w: expected %s, got message type %q", ErrProtocol, what, typ)
	case len(body) > maxAuthMessage:
		return nil, fmt.Errorf("%w: %s of %d bytes exceeds the limit of %d", ErrProtocol, what, len(body), maxAuthMessage)
	}
	return body, nil
}

// protocolErrorf returns an error wrapping ErrProtocol.
func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}
