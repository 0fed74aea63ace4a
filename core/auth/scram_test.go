package auth

import (
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgproto3/v2"
)

// The SCRAM-SHA-256 example of RFC 7677 section 3: user "user", password
// "pencil". The verifier holds the keys derived from that password and salt.
const (
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	rfcVerifier    = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)

func TestSCRAMRFC7677(t *testing.T) {
	t.Run("verifier", func(t *testing.T) {
		salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
		keys, err := deriveSCRAMKeys("pencil", salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys.verifier(); got != rfcVerifier {
			t.Fatalf("verifier = %s; want %s", got, rfcVerifier)
		}
	})
	t.Run("client", func(t *testing.T) {
		c := newSCRAMClient("user", "pencil", rfcClientNonce)
		if got := c.firstMessage(); got != rfcClientFirst {
			t.Fatalf("client-first = %q; want %q", got, rfcClientFirst)
		}
		got, err := c.finalMessage([]byte(rfcServerFirst))
		if err != nil || got != rfcClientFinal {
			t.Fatalf("client-final = %q, %v; want %q", got, err, rfcClientFinal)
		}
		if err := c.verifyFinal([]byte(rfcServerFinal)); err != nil {
			t.Fatalf("verifyFinal: %v", err)
		}
	})
	t.Run("server", func(t *testing.T) {
		secret := mustParseSecret(t, rfcVerifier)
		first, err := parseClientFirst([]byte(rfcClientFirst))
		if err != nil {
			t.Fatal(err)
		}
		x := &scramServerExchange{keys: secret.data().scram, first: first}
		if got := x.serverFirstMessage(rfcServerNonce); got != rfcServerFirst {
			t.Fatalf("server-first = %q; want %q", got, rfcServerFirst)
		}
		got, err := x.verifyClientFinal([]byte(rfcClientFinal))
		if err != nil || got != rfcServerFinal {
			t.Fatalf("server-final = %q, %v; want %q", got, err, rfcServerFinal)
		}
	})
	t.Run("server rejects a tampered proof", func(t *testing.T) {
		secret := mustParseSecret(t, rfcVerifier)
		first, _ := parseClientFirst([]byte(rfcClientFirst))
		x := &scramServerExchange{keys: secret.data().scram, first: first}
		x.serverFirstMessage(rfcServerNonce)
		tampered := strings.Replace(rfcClientFinal, "p=dH", "p=eH", 1)
		if _, err := x.verifyClientFinal([]byte(tampered)); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("verifyClientFinal = %v; want ErrAuthFailed", err)
		}
	})
	t.Run("client rejects a wrong server signature", func(t *testing.T) {
		c := newSCRAMClient("user", "pencil", rfcClientNonce)
		c.firstMessage()
		if _, err := c.finalMessage([]byte(rfcServerFirst)); err != nil {
			t.Fatal(err)
		}
		wrong := strings.Replace(rfcServerFinal, "v=6", "v=7", 1)
		if err := c.verifyFinal([]byte(wrong)); !errors.Is(err, ErrServerSignature) {
			t.Fatalf("verifyFinal = %v; want ErrServerSignature", err)
		}
	})
}

// saslInitial encodes a SASLInitialResponse for SCRAM-SHA-256.
func saslInitial(t testing.TB, data string) []byte {
	return encode(t, &pgproto3.SASLInitialResponse{AuthMechanism: scramMechanism, Data: []byte(data)})
}

// scramScript plays a SCRAM client that sends first, then the message
// final builds from the combined nonce the server chose.
func scramScript(t testing.TB, first []byte, final func(nonce string) string) func([][]byte) (byte, []byte, error) {
	step := 0
	return func(written [][]byte) (byte, []byte, error) {
		step++
		switch step {
		case 1:
			return first[0], first[5:], nil
		case 2:
			sf := string(written[len(written)-1][9:])
			nonce, _, _ := strings.Cut(strings.TrimPrefix(sf, "r="), ",")
			return msgPassword, []byte(final(nonce)), nil
		}
		return 0, nil, io.EOF
	}
}

// TestSCRAMServerRejectsMalformed feeds malformed SCRAM messages to
// AuthenticateClient and checks they are classified, never accepted.
func TestSCRAMServerRejectsMalformed(t *testing.T) {
	validProof := base64.StdEncoding.EncodeToString(make([]byte, 32))
	noFinal := func(string) string { return "" }
	final := func(format string) func(string) string {
		return func(nonce string) string { return strings.ReplaceAll(format, "NONCE", nonce) }
	}
	tests := []struct {
		name  string
		first []byte
		final func(nonce string) string
		want  error
	}{
		{"wrong message type", raw('Q', []byte("SELECT 1\x00")), noFinal, ErrProtocol},
		{"oversized message", saslInitial(t, "n,,n=,r="+strings.Repeat("a", maxAuthMessage)), noFinal, ErrProtocol},
		{"no mechanism terminator", raw('p', []byte(scramMechanism)), noFinal, ErrProtocol},
		{"length shorter than data", raw('p', []byte(scramMechanism+"\x00\x00\x00\x00\x01ab")), noFinal, ErrProtocol},
		{"length field cut short", raw('p', []byte(scramMechanism+"\x00\x00\x00")), noFinal, ErrProtocol},
		{"negative length", raw('p', []byte(scramMechanism+"\x00\xff\xff\xff\xfeab")), noFinal, ErrProtocol},
		{"no data", raw('p', []byte(scramMechanism+"\x00\xff\xff\xff\xff")), noFinal, ErrProtocol},
		{"mechanism not offered", encode(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte("p=tls-server-end-point,,n=,r=abc")}), noFinal, ErrProtocol},
		{"channel binding requested", saslInitial(t, "p=tls-server-end-point,,n=,r=abc"), noFinal, ErrProtocol},
		{"bad cbind flag", saslInitial(t, "x,,n=,r=abc"), noFinal, ErrProtocol},
		{"authzid", saslInitial(t, "n,a=bob,n=,r=abc"), noFinal, ErrProtocol},
		{"bad gs2 header", saslInitial(t, "n;,n=,r=abc"), noFinal, ErrProtocol},
		{"mandatory extension", saslInitial(t, "n,,m=ext,n=,r=abc"), noFinal, ErrProtocol},
		{"no username", saslInitial(t, "n,,r=abc"), noFinal, ErrProtocol},
		{"no nonce", saslInitial(t, "n,,n="), noFinal, ErrProtocol},
		{"empty nonce", saslInitial(t, "n,,n=,r="), noFinal, ErrProtocol},
		{"space in nonce", saslInitial(t, "n,,n=,r=ab c"), noFinal, ErrProtocol},
		{"trailing comma", saslInitial(t, "n,,n=,r=abc,"), noFinal, ErrProtocol},
		{"bad extension", saslInitial(t, "n,,n=,r=abc,1=x"), noFinal, ErrProtocol},
		{"NUL byte", saslInitial(t, "n,,n=,r=a\x00bc"), noFinal, ErrProtocol},
		{"client terminates", raw('X', nil), noFinal, io.EOF},
		{"final: only channel binding", saslInitial(t, "n,,n=,r=abc"), final("c=biws"), ErrProtocol},
		{"final: y binding for n", saslInitial(t, "n,,n=,r=abc"), final("c=eSws,r=NONCE,p=" + validProof), ErrProtocol},
		{"final: n binding for y", saslInitial(t, "y,,n=,r=abc"), final("c=biws,r=NONCE,p=" + validProof), ErrProtocol},
		{"final: attributes out of order", saslInitial(t, "n,,n=,r=abc"), final("r=NONCE,c=biws,p=" + validProof), ErrProtocol},
		{"final: wrong nonce", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=abcd,p=" + validProof), ErrProtocol},
		{"final: client nonce only", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=abc,p=" + validProof), ErrProtocol},
		{"final: proof not base64", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,p=!!!!"), ErrProtocol},
		{"final: proof with newline", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,p=" + validProof[:20] + "\n" + validProof[20:]), ErrProtocol},
		{"final: short proof", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,p=AAAA"), ErrProtocol},
		{"final: attribute after proof", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,p=" + validProof + ",x=1"), ErrProtocol},
		{"final: no proof", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,x=1"), ErrProtocol},
		{"final: two proofs", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,p=" + validProof + ",p=" + validProof), ErrProtocol},
		{"final: oversized", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,x=" + strings.Repeat("a", maxAuthMessage) + ",p=" + validProof), ErrProtocol},
		{"final: empty", saslInitial(t, "n,,n=,r=abc"), final(""), ErrProtocol},
		{"final: wrong proof", saslInitial(t, "n,,n=,r=abc"), final("c=biws,r=NONCE,p=" + validProof), ErrAuthFailed},
		{"final: y flag, extension, wrong proof", saslInitial(t, "y,,n=bob,r=abc,x=ext"), final("c=eSws,r=NONCE,x=ext,p=" + validProof), ErrAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &scriptTransport{next: scramScript(t, tt.first, tt.final)}
			err := AuthenticateClient(tr, MethodSCRAM, "alice", mustParseSecret(t, rfcVerifier))
			if !errors.Is(err, tt.want) {
				t.Fatalf("AuthenticateClient = %v; want %v", err, tt.want)
			}
			for _, m := range tr.written {
				if len(m) >= 9 && m[0] == msgAuthentication && m[8] == authSASLFinal {
					t.Fatal("server sent AuthenticationSASLFinal to a failed client")
				}
			}
		})
	}
}

func TestPasswordServerRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"no terminator", raw('p', []byte("secret")), ErrProtocol},
		{"data after terminator", raw('p', []byte("secret\x00x")), ErrProtocol},
		{"empty password", raw('p', []byte("\x00")), ErrAuthFailed},
		{"wrong type", raw('Q', []byte("secret\x00")), ErrProtocol},
		{"oversized", raw('p', []byte(strings.Repeat("a", maxAuthMessage)+"\x00")), ErrProtocol},
		{"terminate", raw('X', nil), io.EOF},
	}
	for _, m := range []Method{MethodMD5, MethodPassword} {
		for _, tt := range tests {
			t.Run(string(m)+"/"+tt.name, func(t *testing.T) {
				tr := &scriptTransport{next: messages(tt.msg)}
				err := AuthenticateClient(tr, m, "alice", mustParseSecret(t, "secret"))
				if !errors.Is(err, tt.want) {
					t.Fatalf("AuthenticateClient = %v; want %v", err, tt.want)
				}
			})
		}
	}
}

func TestAuthenticateClientRejectsUnknownMethod(t *testing.T) {
	tr := &scriptTransport{next: messages()}
	err := AuthenticateClient(tr, Method("gss"), "alice", mustParseSecret(t, "secret"))
	if !errors.Is(err, ErrMethodUnsupported) || len(tr.written) != 0 {
		t.Fatalf("AuthenticateClient = %v after writing %d messages; want ErrMethodUnsupported and nothing written", err, len(tr.written))
	}
}

func TestAuthenticateClientZeroSecret(t *testing.T) {
	for _, m := range []Method{MethodSCRAM, MethodMD5, MethodPassword} {
		tr := &scriptTransport{next: messages()}
		if err := AuthenticateClient(tr, m, "alice", &Secret{}); !errors.Is(err, ErrSecretUnsupported) {
			t.Errorf("%s with zero Secret = %v; want ErrSecretUnsupported", m, err)
		}
	}
}
