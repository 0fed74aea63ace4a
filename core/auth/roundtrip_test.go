package auth

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func mustParseSecret(t testing.TB, s string) *Secret {
	t.Helper()
	sec, err := ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return &sec
}

// checkOutcome asserts the result of an exchange: want nil means a
// successful login on both sides; a sentinel is what the server side must
// return, with the client then seeing the caller's ErrorResponse.
func checkOutcome(t *testing.T, ex exchange, want error) {
	t.Helper()
	if want == nil {
		if ex.serverErr != nil || ex.clientErr != nil {
			t.Fatalf("server: %v, client: %v; want both nil", ex.serverErr, ex.clientErr)
		}
		return
	}
	if !errors.Is(ex.serverErr, want) {
		t.Fatalf("server: %v; want %v", ex.serverErr, want)
	}
	var se *ServerError
	if !errors.As(ex.clientErr, &se) {
		t.Fatalf("client: %v; want *ServerError", ex.clientErr)
	}
	if want == ErrAuthFailed && se.Code != "28P01" {
		t.Fatalf("client saw SQLSTATE %s; want 28P01", se.Code)
	}
}

func TestRoundTrip(t *testing.T) {
	const user, password = "alice", "correct horse"
	verifier, err := NewSCRAMVerifier(password, 0)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]*Secret{
		"plaintext": mustParseSecret(t, password),
		"md5":       mustParseSecret(t, md5PasswordHash(password, user)),
		"scram":     mustParseSecret(t, verifier),
	}
	tests := []struct {
		method   Method
		secret   string
		password string
		want     error
	}{
		{MethodSCRAM, "plaintext", password, nil},
		{MethodSCRAM, "plaintext", "wrong", ErrAuthFailed},
		{MethodSCRAM, "scram", password, nil},
		{MethodSCRAM, "scram", "wrong", ErrAuthFailed},
		{MethodSCRAM, "md5", password, ErrSecretUnsupported},
		{MethodMD5, "plaintext", password, nil},
		{MethodMD5, "plaintext", "wrong", ErrAuthFailed},
		{MethodMD5, "md5", password, nil},
		{MethodMD5, "md5", "wrong", ErrAuthFailed},
		{MethodMD5, "md5", md5PasswordHash(password, user), nil}, // client holds the hash
		{MethodMD5, "scram", password, ErrSecretUnsupported},
		{MethodPassword, "plaintext", password, nil},
		{MethodPassword, "plaintext", "wrong", ErrAuthFailed},
		{MethodPassword, "plaintext", password + "x", ErrAuthFailed},
		{MethodPassword, "md5", password, nil},
		{MethodPassword, "md5", "wrong", ErrAuthFailed},
		{MethodPassword, "scram", password, nil},
		{MethodPassword, "scram", "wrong", ErrAuthFailed},
		{MethodTrust, "plaintext", "anything", nil},
		{MethodTrust, "scram", "", nil},
	}
	for _, tt := range tests {
		name := string(tt.method) + "/" + tt.secret + "/"
		if tt.password == password {
			name += "right"
		} else {
			name += "other"
		}
		t.Run(name, func(t *testing.T) {
			ex := runExchange(t, tt.method, user, secrets[tt.secret], tt.password, nil)
			checkOutcome(t, ex, tt.want)
			if tt.want == ErrSecretUnsupported && len(ex.server.written) != 1 {
				t.Errorf("server wrote %d messages before refusing the secret; want only the caller's error", len(ex.server.written))
			}
		})
	}
}

// TestPostgreSQLMD5Vector uses a hash PostgreSQL produced for password "foo"
// and role regress_passwd1 (src/test/regress/sql/password.sql).
func TestPostgreSQLMD5Vector(t *testing.T) {
	const user, hash = "regress_passwd1", "md5cd3578025fe2c3d7ed1b9a9b26238b70"
	if got := md5PasswordHash("foo", user); got != hash {
		t.Fatalf("md5PasswordHash = %s; want %s", got, hash)
	}
	for _, m := range []Method{MethodMD5, MethodPassword} {
		t.Run(string(m), func(t *testing.T) {
			checkOutcome(t, runExchange(t, m, user, mustParseSecret(t, hash), "foo", nil), nil)
			checkOutcome(t, runExchange(t, m, user, mustParseSecret(t, hash), "bar", nil), ErrAuthFailed)
		})
	}
}

// TestUnknownUser checks that an unknown user gets the same exchange as a
// known user with a wrong password, and then ErrAuthFailed even if it
// happens to send the password another user has.
func TestUnknownUser(t *testing.T) {
	for _, m := range []Method{MethodSCRAM, MethodMD5, MethodPassword} {
		t.Run(string(m), func(t *testing.T) {
			known := runExchange(t, m, "alice", mustParseSecret(t, "secret"), "guess", nil)
			checkOutcome(t, known, ErrAuthFailed)
			unknown := runExchange(t, m, "mallory", nil, "secret", nil)
			checkOutcome(t, unknown, ErrAuthFailed)
			if k, u := known.server.authCodes(), unknown.server.authCodes(); !slices.Equal(k, u) {
				t.Errorf("unknown user saw messages %v; known user with wrong password saw %v", u, k)
			}
			if !strings.Contains(unknown.serverErr.Error(), "does not exist") {
				t.Errorf("server error %q should tell the operator the user does not exist", unknown.serverErr)
			}
		})
	}
}

// TestSCRAMSaltIsStable checks that repeated attempts see the same salt and
// iteration count for an unknown user and for a plaintext secret, as they do
// for a stored verifier, so the salt does not reveal which is which.
func TestSCRAMSaltIsStable(t *testing.T) {
	serverFirst := func(user string, secret *Secret) string {
		ex := runExchange(t, MethodSCRAM, user, secret, "guess", nil)
		for _, m := range ex.server.written {
			if m[0] == msgAuthentication && binary.BigEndian.Uint32(m[5:9]) == authSASLContinue {
				_, params, _ := strings.Cut(string(m[9:]), ",") // drop the nonce
				return params
			}
		}
		t.Fatal("no AuthenticationSASLContinue written")
		return ""
	}
	plain := mustParseSecret(t, "secret")
	if a, b := serverFirst("bob", nil), serverFirst("bob", nil); a != b {
		t.Errorf("unknown user: salt changed between attempts: %q, %q", a, b)
	}
	if a, b := serverFirst("carol", plain), serverFirst("carol", plain); a != b {
		t.Errorf("plaintext secret: salt changed between attempts: %q, %q", a, b)
	}
	if a, b := serverFirst("bob", nil), serverFirst("dave", nil); a == b {
		t.Errorf("two unknown users share the salt %q", a)
	}
}

func TestClientWithoutPassword(t *testing.T) {
	ex := runExchange(t, MethodSCRAM, "alice", mustParseSecret(t, "secret"), "", nil)
	if !errors.Is(ex.clientErr, ErrPasswordRequired) {
		t.Errorf("client: %v; want ErrPasswordRequired", ex.clientErr)
	}
	if !errors.Is(ex.serverErr, io.EOF) {
		t.Errorf("server: %v; want an error wrapping io.EOF when the client hangs up", ex.serverErr)
	}
}

// TestServerMisbehaviour tampers with a real server's SCRAM messages and
// checks that the client refuses to log in.
func TestServerMisbehaviour(t *testing.T) {
	tests := []struct {
		name    string
		rewrite func(code uint32, data []byte) ([]byte, bool)
		want    error
	}{
		{"wrong server signature", func(code uint32, data []byte) ([]byte, bool) {
			if code == authSASLFinal {
				return []byte("v=" + strings.Repeat("A", 43) + "="), true
			}
			return data, true
		}, ErrServerSignature},
		{"skipped SASLFinal", func(code uint32, data []byte) ([]byte, bool) {
			return data, code != authSASLFinal
		}, ErrProtocol},
		{"nonce not extending the client's", func(code uint32, data []byte) ([]byte, bool) {
			if code == authSASLContinue {
				data[2] ^= 1
			}
			return data, true
		}, ErrProtocol},
		{"huge iteration count", func(code uint32, data []byte) ([]byte, bool) {
			if code == authSASLContinue {
				i := strings.LastIndex(string(data), ",i=")
				return append(data[:i], ",i=999999999"...), true
			}
			return data, true
		}, ErrProtocol},
		{"SCRAM error in SASLFinal", func(code uint32, data []byte) ([]byte, bool) {
			if code == authSASLFinal {
				return []byte("e=invalid-proof"), true
			}
			return data, true
		}, ErrAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := runExchange(t, MethodSCRAM, "alice", mustParseSecret(t, "secret"), "secret", tt.rewrite)
			if !errors.Is(ex.clientErr, tt.want) {
				t.Fatalf("client: %v; want %v", ex.clientErr, tt.want)
			}
		})
	}
}

// TestPgBouncerSCRAMVectors uses the SCRAM-SHA-256 verifiers of passwords
// "foo" and "bar" from PgBouncer's test/userlist.txt, in the format
// PostgreSQL stores in pg_authid.
func TestPgBouncerSCRAMVectors(t *testing.T) {
	vectors := []struct{ user, password, verifier string }{
		{"scramuser1", "foo", "SCRAM-SHA-256$4096:D76gvGUVj9Z4DNiGoabOBg==$RukL0Xo3Ql/2F9FsD7mcQ3GATG2fD3PA71qY1JagGDs=:BhKUwyyivFm7Tq2jDJVXSVRbRDgTWyBilZKgg6DDuYU="},
		{"scramuser2", "bar", "SCRAM-SHA-256$4096:BUYIT9YAsWf036OHLPfv2Q==$zuk7pzdEc5tvftsRIuwlStNxVc+wIE/xfDs7ahsKN0k=:Lov6mndE0DmlgtY60e1LyDsLctQyoH+Bvkm9K9njSa8="},
	}
	for _, v := range vectors {
		t.Run(v.user, func(t *testing.T) {
			secret := mustParseSecret(t, v.verifier)
			if got := secret.data().scram.verifier(); got != v.verifier {
				t.Fatalf("verifier does not format back: %s", got)
			}
			keys, err := deriveSCRAMKeys(v.password, secret.data().scram.salt, 4096)
			if err != nil || keys.verifier() != v.verifier {
				t.Fatalf("derived verifier %s, %v; want %s", keys.verifier(), err, v.verifier)
			}
			for _, m := range []Method{MethodSCRAM, MethodPassword} {
				checkOutcome(t, runExchange(t, m, v.user, secret, v.password, nil), nil)
				checkOutcome(t, runExchange(t, m, v.user, secret, v.password+"x", nil), ErrAuthFailed)
			}
		})
	}
}
