package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgproto3/v2"
)

// ServerError is an ErrorResponse a PostgreSQL server sent during
// authentication, such as SQLSTATE 28P01 for a wrong password or 3D000 for
// an unknown database. The caller may forward it to its client.
type ServerError struct {
	// Severity is the localised severity, usually "FATAL".
	Severity string
	// Code is the SQLSTATE.
	Code string
	// Message is the primary human-readable message.
	Message string
	// Detail is the optional secondary message.
	Detail string
	// Hint is the optional suggestion.
	Hint string
}

// Error returns the severity, message and SQLSTATE.
func (e *ServerError) Error() string {
	return fmt.Sprintf("auth: server: %s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
}

// AuthenticateToServer logs in to a PostgreSQL server as user with password,
// playing the client, after the caller has sent the StartupMessage. It reads
// messages until AuthenticationOk and returns nil then; the caller goes on to
// read ParameterStatus, BackendKeyData and ReadyForQuery.
//
// It answers AuthenticationCleartextPassword, AuthenticationMD5Password and
// SCRAM-SHA-256 without channel binding. For md5, a password that is itself
// an md5 hash ("md5" + 32 lowercase hex digits, as stored in pg_authid) is
// used as the hash, as PgBouncer does; PostgreSQL never accepts such a string
// as a literal password. For SCRAM it checks the server's signature, so a
// server that does not know the password cannot complete the login. The
// password is used without SASLprep, which is exact for ASCII passwords; see
// the note in scram.go.
//
// NoticeResponse messages are skipped. Errors:
//   - *ServerError when the server sends an ErrorResponse;
//   - ErrServerSignature when the SCRAM server signature is wrong;
//   - ErrMethodUnsupported when the server asks for GSSAPI, SSPI, Kerberos
//     or a SASL mechanism other than SCRAM-SHA-256;
//   - ErrPasswordRequired when the server asks for a password and it is "";
//   - ErrProtocol for any unexpected or malformed message, including an
//     AuthenticationOk before the SCRAM exchange is complete;
//   - errors from t, wrapped.
func AuthenticateToServer(t Transport, user, password string) error {
	c := &serverLogin{t: t, user: user, password: password}
	for {
		typ, body, err := t.ReadMessage()
		if err != nil {
			return fmt.Errorf("auth: reading authentication request: %w", err)
		}
		switch typ {
		case msgErrorResponse:
			var e pgproto3.ErrorResponse
			if err := e.Decode(body); err != nil {
				return protocolErrorf("malformed ErrorResponse")
			}
			return &ServerError{Severity: e.Severity, Code: e.Code, Message: e.Message, Detail: e.Detail, Hint: e.Hint}
		case msgNotice:
			continue
		case msgAuthentication:
			done, err := c.handle(body)
			if err != nil || done {
				return err
			}
		default:
			return protocolErrorf("unexpected message type %q during authentication", typ)
		}
	}
}

// serverLogin is the client-side state of one login.
type serverLogin struct {
	t        Transport
	user     string
	password string

	answered bool         // a password or SASL exchange has started
	scram    *scramClient // non-nil once SCRAM has started
}

// handle processes one Authentication message and reports whether the login
// is complete.
func (c *serverLogin) handle(body []byte) (done bool, err error) {
	if len(body) < 4 {
		return false, protocolErrorf("authentication request too short")
	}
	code, data := binary.BigEndian.Uint32(body), body[4:]
	switch code {
	case authOK:
		if len(data) != 0 {
			return false, protocolErrorf("malformed AuthenticationOk")
		}
		if c.scram != nil && !c.scram.verified {
			return false, protocolErrorf("server sent AuthenticationOk before completing SCRAM")
		}
		return true, nil
	case authCleartextPassword, authMD5Password, authSASL:
		if c.answered {
			return false, protocolErrorf("server repeated its authentication request")
		}
		c.answered = true
		if c.password == "" {
			return false, ErrPasswordRequired
		}
	case authSASLContinue:
		if c.scram == nil || c.scram.serverSignature != nil {
			return false, protocolErrorf("unexpected AuthenticationSASLContinue")
		}
		final, err := c.scram.finalMessage(data)
		if err != nil {
			return false, err
		}
		return false, send(c.t, &pgproto3.SASLResponse{Data: []byte(final)})
	case authSASLFinal:
		if c.scram == nil || c.scram.serverSignature == nil || c.scram.verified {
			return false, protocolErrorf("unexpected AuthenticationSASLFinal")
		}
		return false, c.scram.verifyFinal(data)
	case authKerberosV5, authSCMCredential, authGSS, authGSSContinue, authSSPI:
		return false, fmt.Errorf("%w: server requested authentication type %d", ErrMethodUnsupported, code)
	default:
		return false, protocolErrorf("unknown authentication request type %d", code)
	}

	switch code {
	case authCleartextPassword:
		if len(data) != 0 {
			return false, protocolErrorf("malformed AuthenticationCleartextPassword")
		}
		return false, send(c.t, &pgproto3.PasswordMessage{Password: c.password})
	case authMD5Password:
		if len(data) != 4 {
			return false, protocolErrorf("malformed AuthenticationMD5Password")
		}
		hash := c.password
		if !isMD5Hash(hash) {
			hash = md5PasswordHash(c.password, c.user)
		}
		return false, send(c.t, &pgproto3.PasswordMessage{Password: md5Response(hash, [4]byte(data))})
	default: // authSASL
		mechanisms, err := parseSASLMechanisms(data)
		if err != nil {
			return false, err
		}
		if !slices.Contains(mechanisms, scramMechanism) {
			return false, fmt.Errorf("%w: server offered SASL mechanisms %q", ErrMethodUnsupported, mechanisms)
		}
		// The user name goes in the StartupMessage; like libpq, send none.
		c.scram = newSCRAMClient("", c.password, newNonce())
		return false, send(c.t, &pgproto3.SASLInitialResponse{
			AuthMechanism: scramMechanism,
			Data:          []byte(c.scram.firstMessage()),
		})
	}
}

// parseSASLMechanisms parses the mechanism list of AuthenticationSASL: names
// each ended by NUL, the list ended by an empty name.
func parseSASLMechanisms(data []byte) ([]string, error) {
	if len(data) > maxAuthMessage {
		return nil, protocolErrorf("AuthenticationSASL too long")
	}
	var names []string
	rest := string(data)
	for {
		name, after, ok := strings.Cut(rest, "\x00")
		switch {
		case !ok:
			return nil, protocolErrorf("malformed AuthenticationSASL")
		case name == "" && after != "":
			return nil, protocolErrorf("malformed AuthenticationSASL: data after the mechanism list")
		case name == "":
			return names, nil
		}
		names = append(names, name)
		rest = after
	}
}

// scramClient is the client side of one SCRAM-SHA-256 exchange without
// channel binding.
type scramClient struct {
	user, password, nonce string

	clientFirstBare string
	serverSignature []byte // set by finalMessage
	verified        bool   // set by verifyFinal
}

func newSCRAMClient(user, password, nonce string) *scramClient {
	return &scramClient{user: user, password: password, nonce: nonce}
}

// firstMessage returns the client-first-message.
func (c *scramClient) firstMessage() string {
	c.clientFirstBare = "n=" + saslNameEscape(c.user) + ",r=" + c.nonce
	return "n,," + c.clientFirstBare
}

// finalMessage computes the client-final-message answering serverFirst.
func (c *scramClient) finalMessage(serverFirst []byte) (string, error) {
	sf, err := parseServerFirst(serverFirst, c.nonce)
	if err != nil {
		return "", err
	}
	salted, err := saltedPassword(c.password, sf.salt, sf.iterations)
	if err != nil {
		return "", err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	withoutProof := "c=biws,r=" + sf.nonce // biws = base64("n,,")
	authMessage := c.clientFirstBare + "," + string(serverFirst) + "," + withoutProof
	proof := make([]byte, scramKeyLen)
	subtle.XORBytes(proof, clientKey, hmacSHA256(storedKey[:], authMessage))
	c.serverSignature = hmacSHA256(hmacSHA256(salted, "Server Key"), authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

// verifyFinal checks the server-final-message against the expected server
// signature.
func (c *scramClient) verifyFinal(serverFinal []byte) error {
	sig, err := parseServerFinal(serverFinal)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(sig, c.serverSignature) != 1 {
		return ErrServerSignature
	}
	c.verified = true
	return nil
}
