package auth

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzParseClientFirst checks that any client-first-message is either
// rejected with ErrProtocol or parsed into a consistent message.
func FuzzParseClientFirst(f *testing.F) {
	for _, s := range []string{
		rfcClientFirst,
		"n,,n=,r=abc",
		"y,,n=bob,r=abc,x=ext",
		"p=tls-server-end-point,,n=,r=abc",
		"n,a=bob,n=,r=abc",
		"n,,m=ext,n=,r=abc",
		"n,,n=,r=",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := parseClientFirst(msg)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		if m.gs2Header != "n,," && m.gs2Header != "y,," {
			t.Fatalf("accepted GS2 header %q", m.gs2Header)
		}
		if m.gs2Header+m.bare != string(msg) {
			t.Fatalf("header %q + bare %q != message %q", m.gs2Header, m.bare, msg)
		}
		if !validNonce(m.nonce) || !strings.Contains(m.bare, ",r="+m.nonce) {
			t.Fatalf("accepted nonce %q", m.nonce)
		}
		if len(msg) > maxAuthMessage {
			t.Fatalf("accepted a message of %d bytes", len(msg))
		}
	})
}

// FuzzParseClientFinal checks that any client-final-message is either
// rejected with ErrProtocol or parsed into a consistent message.
func FuzzParseClientFinal(f *testing.F) {
	f.Add([]byte(rfcClientFinal))
	f.Add([]byte("c=biws,r=abc,x=1,p=" + strings.Repeat("A", 43) + "="))
	f.Add([]byte("c=biws,r=abc,p=AAAA"))
	f.Add([]byte("c=biws,r=abc,p=" + strings.Repeat("A", 43) + "=,x=1"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := parseClientFinal(msg)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		if len(m.proof) != scramKeyLen {
			t.Fatalf("accepted a proof of %d bytes", len(m.proof))
		}
		if !strings.HasPrefix(string(msg), m.withoutProof+",p=") || strings.Contains(string(msg)[len(m.withoutProof)+3:], ",") {
			t.Fatalf("without-proof %q is not everything before the final proof of %q", m.withoutProof, msg)
		}
	})
}

// FuzzParseServerFirst checks the client's parser of a server's challenge.
func FuzzParseServerFirst(f *testing.F) {
	f.Add([]byte(rfcServerFirst))
	f.Add([]byte("r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=1,x=ext"))
	f.Add([]byte("m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=1"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := parseServerFirst(msg, rfcClientNonce)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		if !strings.HasPrefix(m.nonce, rfcClientNonce) || len(m.nonce) == len(rfcClientNonce) {
			t.Fatalf("accepted nonce %q", m.nonce)
		}
		if m.iterations < 1 || m.iterations > maxSCRAMIterations || len(m.salt) == 0 {
			t.Fatalf("accepted iterations %d, salt %x", m.iterations, m.salt)
		}
	})
}

// FuzzParseSecret checks that a parsed secret is usable: a verifier that
// parses formats back to the same string.
func FuzzParseSecret(f *testing.F) {
	f.Add(rfcVerifier)
	f.Add("md5cd3578025fe2c3d7ed1b9a9b26238b70")
	f.Add("SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA")
	f.Add("pencil")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSecret(in)
		if err != nil {
			if !errors.Is(err, ErrMalformedSecret) {
				t.Fatalf("error %v does not wrap ErrMalformedSecret", err)
			}
			return
		}
		switch s.Kind() {
		case SecretSCRAM:
			k := s.data().scram
			if len(k.storedKey) != scramKeyLen || len(k.serverKey) != scramKeyLen || len(k.salt) == 0 {
				t.Fatalf("accepted verifier %q with bad keys", in)
			}
		case SecretMD5:
			if !isMD5Hash(in) {
				t.Fatalf("accepted md5 hash %q", in)
			}
		case SecretPlaintext:
			if in == "" {
				t.Fatal("accepted an empty password")
			}
		default:
			t.Fatalf("kind %v", s.Kind())
		}
	})
}

// FuzzAuthenticateClientSCRAM runs the whole server-side SCRAM exchange on
// arbitrary client messages: it must never succeed, never panic, and
// classify every failure.
func FuzzAuthenticateClientSCRAM(f *testing.F) {
	f.Add([]byte(saslInitial(f, rfcClientFirst)[5:]), []byte(rfcClientFinal))
	f.Add([]byte(saslInitial(f, "y,,n=,r=abc")[5:]), []byte("c=eSws,r=abc,p=AAAA"))
	f.Fuzz(func(t *testing.T, initial, final []byte) {
		tr := &scriptTransport{next: messages(raw('p', initial), raw('p', final))}
		err := AuthenticateClient(tr, MethodSCRAM, "user", mustParseSecret(t, rfcVerifier))
		if err == nil {
			t.Fatal("fuzzed client authenticated")
		}
		if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrAuthFailed) && !errors.Is(err, io.EOF) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}
