package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestParseSecret(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want SecretKind
		err  error
	}{
		{"plaintext", "pencil", SecretPlaintext, nil},
		{"md5 hash", "md5cd3578025fe2c3d7ed1b9a9b26238b70", SecretMD5, nil},
		{"md5 uppercase hex is plaintext, as in PostgreSQL", "md5CD3578025FE2C3D7ED1B9A9B26238B70", SecretPlaintext, nil},
		{"md5 too short is plaintext", "md5cd3578025fe2c3d7ed1b9a9b26238b7", SecretPlaintext, nil},
		{"md5 non-hex is plaintext", "md5012345678901234567890123456789zz", SecretPlaintext, nil},
		{"scram verifier", rfcVerifier, SecretSCRAM, nil},
		{"PostgreSQL regression verifier", "SCRAM-SHA-256$4096:VLK4RMaQLCvNtQ==$6YtlR4t69SguDiwFvbVgVZtuz6gpJQQqUMZ7IQJK5yI=:ps75jrHeYU4lXCcXI4O8oIdJ3eO8o2jirjruw9phBTo=", SecretSCRAM, nil},
		{"empty", "", 0, ErrMalformedSecret},
		{"scram truncated", "SCRAM-SHA-256$1234", 0, ErrMalformedSecret},
		{"scram no keys", "SCRAM-SHA-256$4096:c2FsdA==", 0, ErrMalformedSecret},
		{"scram zero iterations", strings.Replace(rfcVerifier, "$4096:", "$0:", 1), 0, ErrMalformedSecret},
		{"scram negative iterations", strings.Replace(rfcVerifier, "$4096:", "$-1:", 1), 0, ErrMalformedSecret},
		{"scram huge iterations", strings.Replace(rfcVerifier, "$4096:", "$99999999999:", 1), 0, ErrMalformedSecret},
		{"scram bad salt", strings.Replace(rfcVerifier, "W22Z", "W2!Z", 1), 0, ErrMalformedSecret},
		{"scram empty salt", strings.Replace(rfcVerifier, "W22ZaJ0SNY7soEsUEjb6gQ==", "", 1), 0, ErrMalformedSecret},
		{"scram short StoredKey", strings.Replace(rfcVerifier, "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", "AAAA", 1), 0, ErrMalformedSecret},
		{"scram short ServerKey", strings.TrimSuffix(rfcVerifier, "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=") + "AAAA", 0, ErrMalformedSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSecret(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseSecret error = %v; want %v", err, tt.err)
			}
			if err != nil {
				if tt.in != "" && strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q reveals the secret", err)
				}
				return
			}
			if s.Kind() != tt.want {
				t.Fatalf("Kind = %v; want %v", s.Kind(), tt.want)
			}
		})
	}
}

func TestSecretSupports(t *testing.T) {
	secrets := map[string]Secret{
		"plaintext": *mustParseSecret(t, "pencil"),
		"md5":       *mustParseSecret(t, "md5cd3578025fe2c3d7ed1b9a9b26238b70"),
		"scram":     *mustParseSecret(t, rfcVerifier),
		"zero":      {},
	}
	want := map[string]map[Method]bool{
		"plaintext": {MethodSCRAM: true, MethodMD5: true, MethodPassword: true, MethodTrust: true},
		"md5":       {MethodSCRAM: false, MethodMD5: true, MethodPassword: true, MethodTrust: true},
		"scram":     {MethodSCRAM: true, MethodMD5: false, MethodPassword: true, MethodTrust: true},
		"zero":      {MethodSCRAM: false, MethodMD5: false, MethodPassword: false, MethodTrust: true},
	}
	for name, s := range secrets {
		for m, w := range want[name] {
			if got := s.Supports(m); got != w {
				t.Errorf("%s secret Supports(%s) = %v; want %v", name, m, got, w)
			}
		}
		if s.Supports(Method("ldap")) {
			t.Errorf("%s secret supports an unknown method", name)
		}
	}
}

func TestSecretDoesNotPrint(t *testing.T) {
	const pw = "hunter2-very-secret"
	s := *mustParseSecret(t, pw)
	type user struct {
		name   string
		secret Secret
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		for _, v := range []any{s, &s, user{"alice", s}, &user{"alice", s}} {
			if out := fmt.Sprintf(format, v); strings.Contains(out, pw) || strings.Contains(out, fmt.Sprintf("%x", pw)) {
				t.Errorf("Sprintf(%q, %T) = %q reveals the password", format, v, out)
			}
		}
	}
}

func TestResolveReference(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{"PGPASS": "from-env", "EMPTY": ""}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		ref     string
		want    string
		err     error
		errText string // must appear in the error
	}{
		{"env", "env:PGPASS", "from-env", nil, ""},
		{"env unset", "env:NOPE", "", ErrEmptyReference, "NOPE"},
		{"env empty", "env:EMPTY", "", ErrEmptyReference, "EMPTY"},
		{"env without name", "env:", "", ErrEmptyReference, ""},
		{"file", "file:" + write("a", "from-file\n"), "from-file", nil, ""},
		{"file with CRLF", "file:" + write("b", "from-file\r\n"), "from-file", nil, ""},
		{"file without newline", "file:" + write("c", "from-file"), "from-file", nil, ""},
		{"file keeps inner spaces", "file:" + write("d", " a b \n"), " a b ", nil, ""},
		{"empty file", "file:" + write("e", "\n"), "", ErrEmptyReference, "e"},
		{"missing file", "file:" + filepath.Join(dir, "missing"), "", fs.ErrNotExist, "missing"},
		{"file without path", "file:", "", ErrEmptyReference, ""},
		{"literal", "pencil", "pencil", nil, ""},
		{"literal with colon", "environment:x", "environment:x", nil, ""},
		{"literal verifier", rfcVerifier, rfcVerifier, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveReference(tt.ref, getenv)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ResolveReference(%q) error = %v; want %v", tt.ref, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("ResolveReference(%q) = %q; want %q", tt.ref, got, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("error %q does not name %q", err, tt.errText)
			}
		})
	}
	t.Run("nil getenv uses the process environment", func(t *testing.T) {
		t.Setenv("SLUICE_AUTH_TEST_PASSWORD", "from-process")
		if got, err := ResolveReference("env:SLUICE_AUTH_TEST_PASSWORD", nil); err != nil || got != "from-process" {
			t.Fatalf("ResolveReference = %q, %v; want from-process", got, err)
		}
	})
}

var verifierFormat = regexp.MustCompile(`^SCRAM-SHA-256\$(\d+):[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$`)

func TestNewSCRAMVerifier(t *testing.T) {
	v1, err := NewSCRAMVerifier("pencil", 0)
	if err != nil {
		t.Fatal(err)
	}
	m := verifierFormat.FindStringSubmatch(v1)
	if m == nil || m[1] != "4096" {
		t.Fatalf("verifier %q does not have PostgreSQL's format with 4096 iterations", v1)
	}
	if s := mustParseSecret(t, v1); s.Kind() != SecretSCRAM {
		t.Fatalf("ParseSecret(verifier).Kind() = %v", s.Kind())
	}
	v2, err := NewSCRAMVerifier("pencil", 0)
	if err != nil || v1 == v2 {
		t.Fatalf("two verifiers of one password are equal (%q): the salt is not random", v1)
	}
	if v, err := NewSCRAMVerifier("pencil", 10); err != nil || verifierFormat.FindStringSubmatch(v)[1] != "10" {
		t.Fatalf("NewSCRAMVerifier(10) = %q, %v", v, err)
	}
	for _, bad := range []struct {
		pw   string
		iter int
	}{{"", 0}, {"pencil", -1}, {"pencil", maxSCRAMIterations + 1}} {
		if _, err := NewSCRAMVerifier(bad.pw, bad.iter); err == nil {
			t.Errorf("NewSCRAMVerifier(%q, %d) succeeded; want an error", bad.pw, bad.iter)
		}
	}
}
