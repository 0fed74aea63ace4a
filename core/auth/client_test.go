package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgproto3/v2"
)

func TestAuthenticateToServerScripted(t *testing.T) {
	ok := encode(t, &pgproto3.AuthenticationOk{})
	sasl := func(mechanisms ...string) []byte {
		return encode(t, &pgproto3.AuthenticationSASL{AuthMechanisms: mechanisms})
	}
	tests := []struct {
		name     string
		password string
		script   [][]byte
		want     error
		wantSent int // messages the client must have written
	}{
		{"trust", "pw", [][]byte{ok}, nil, 0},
		{"notice skipped", "pw", [][]byte{encode(t, &pgproto3.NoticeResponse{Message: "hi"}), ok}, nil, 0},
		{"cleartext", "pw", [][]byte{encode(t, &pgproto3.AuthenticationCleartextPassword{}), ok}, nil, 1},
		{"md5", "pw", [][]byte{encode(t, &pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}}), ok}, nil, 1},
		{"unexpected message", "pw", [][]byte{raw('Z', []byte{'I'})}, ErrProtocol, 0},
		{"short authentication request", "pw", [][]byte{raw('R', []byte{0, 0})}, ErrProtocol, 0},
		{"unknown request code", "pw", [][]byte{authMessage(99, nil)}, ErrProtocol, 0},
		{"AuthenticationOk with data", "pw", [][]byte{authMessage(authOK, []byte{1})}, ErrProtocol, 0},
		{"md5 salt too short", "pw", [][]byte{authMessage(authMD5Password, []byte{1, 2})}, ErrProtocol, 0},
		{"cleartext with data", "pw", [][]byte{authMessage(authCleartextPassword, []byte{1})}, ErrProtocol, 0},
		{"GSSAPI", "pw", [][]byte{authMessage(authGSS, nil)}, ErrMethodUnsupported, 0},
		{"SSPI", "pw", [][]byte{authMessage(authSSPI, nil)}, ErrMethodUnsupported, 0},
		{"SASL without SCRAM-SHA-256", "pw", [][]byte{sasl("SCRAM-SHA-256-PLUS")}, ErrMethodUnsupported, 0},
		{"SASL list unterminated", "pw", [][]byte{authMessage(authSASL, []byte("SCRAM-SHA-256"))}, ErrProtocol, 0},
		// pgproto3's own decoder loops forever on this one.
		{"SASL list with data after end", "pw", [][]byte{authMessage(authSASL, []byte("\x00\x00x"))}, ErrProtocol, 0},
		{"SASLContinue before SASL", "pw", [][]byte{authMessage(authSASLContinue, []byte("r=x,s=c2FsdA==,i=1"))}, ErrProtocol, 0},
		{"SASLFinal before SASL", "pw", [][]byte{authMessage(authSASLFinal, []byte("v=x"))}, ErrProtocol, 0},
		{"OK after SASL without exchange", "pw", [][]byte{sasl(scramMechanism), ok}, ErrProtocol, 1},
		{"server-first with foreign nonce", "pw", [][]byte{sasl(scramMechanism), authMessage(authSASLContinue, []byte("r=xyz123,s=c2FsdA==,i=4096"))}, ErrProtocol, 1},
		{"repeated request", "pw", [][]byte{encode(t, &pgproto3.AuthenticationCleartextPassword{}), encode(t, &pgproto3.AuthenticationCleartextPassword{})}, ErrProtocol, 1},
		{"no password for cleartext", "", [][]byte{encode(t, &pgproto3.AuthenticationCleartextPassword{})}, ErrPasswordRequired, 0},
		{"no password for md5", "", [][]byte{encode(t, &pgproto3.AuthenticationMD5Password{})}, ErrPasswordRequired, 0},
		{"malformed ErrorResponse", "pw", [][]byte{raw('E', []byte("SFATAL"))}, ErrProtocol, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &scriptTransport{next: messages(tt.script...)}
			err := AuthenticateToServer(tr, "alice", tt.password)
			if !errors.Is(err, tt.want) {
				t.Fatalf("AuthenticateToServer = %v; want %v", err, tt.want)
			}
			if len(tr.written) != tt.wantSent {
				t.Fatalf("client wrote %d messages; want %d", len(tr.written), tt.wantSent)
			}
		})
	}
}

func TestAuthenticateToServerWritesPostgreSQLAnswers(t *testing.T) {
	t.Run("cleartext", func(t *testing.T) {
		tr := &scriptTransport{next: messages(encode(t, &pgproto3.AuthenticationCleartextPassword{}), encode(t, &pgproto3.AuthenticationOk{}))}
		if err := AuthenticateToServer(tr, "alice", "s3cret"); err != nil {
			t.Fatal(err)
		}
		if want := encode(t, &pgproto3.PasswordMessage{Password: "s3cret"}); string(tr.written[0]) != string(want) {
			t.Fatalf("wrote %q; want %q", tr.written[0], want)
		}
	})
	t.Run("md5", func(t *testing.T) {
		// md5(md5("foo"+"regress_passwd1") + salt), spelled out.
		salt := [4]byte{'a', 'b', 'c', 'd'}
		want := "md5" + md5Hex("cd3578025fe2c3d7ed1b9a9b26238b70", "abcd")
		for _, pw := range []string{"foo", "md5cd3578025fe2c3d7ed1b9a9b26238b70"} {
			tr := &scriptTransport{next: messages(encode(t, &pgproto3.AuthenticationMD5Password{Salt: salt}), encode(t, &pgproto3.AuthenticationOk{}))}
			if err := AuthenticateToServer(tr, "regress_passwd1", pw); err != nil {
				t.Fatal(err)
			}
			if got := encode(t, &pgproto3.PasswordMessage{Password: want}); string(tr.written[0]) != string(got) {
				t.Fatalf("password %q: wrote %q; want %q", pw, tr.written[0], got)
			}
		}
	})
	t.Run("SCRAM initial response", func(t *testing.T) {
		tr := &scriptTransport{next: messages(encode(t, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", scramMechanism}}))}
		_ = AuthenticateToServer(tr, "alice", "s3cret")
		if len(tr.written) != 1 {
			t.Fatalf("wrote %d messages; want 1", len(tr.written))
		}
		body := string(tr.written[0][5:])
		if tr.written[0][0] != 'p' || !strings.HasPrefix(body, scramMechanism+"\x00") {
			t.Fatalf("wrote %q; want a SASLInitialResponse for %s", tr.written[0], scramMechanism)
		}
		data := body[len(scramMechanism)+1+4:]
		if !strings.HasPrefix(data, "n,,n=,r=") || len(data) != len("n,,n=,r=")+24 {
			t.Fatalf("client-first-message %q; want n,,n=,r=<24-char nonce>", data)
		}
	})
}

func TestAuthenticateToServerReturnsServerError(t *testing.T) {
	resp := &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "alice"`, Hint: "check it"}
	tr := &scriptTransport{next: messages(encode(t, &pgproto3.AuthenticationCleartextPassword{}), encode(t, resp))}
	err := AuthenticateToServer(tr, "alice", "wrong")
	var se *ServerError
	if !errors.As(err, &se) {
		t.Fatalf("AuthenticateToServer = %v; want *ServerError", err)
	}
	want := ServerError{Severity: "FATAL", Code: "28P01", Message: resp.Message, Hint: "check it"}
	if *se != want {
		t.Fatalf("ServerError = %+v; want %+v", *se, want)
	}
	if !strings.Contains(se.Error(), "28P01") {
		t.Errorf("Error() = %q; want the SQLSTATE in it", se.Error())
	}
}
