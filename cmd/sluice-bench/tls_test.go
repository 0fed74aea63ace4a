package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/core/config"
)

func TestWriteServerCert(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := writeServerCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("the certificate and key do not load as a pair: %v", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", cert.PublicKey)
	}
	if err := cert.VerifyHostname(loopback); err != nil {
		t.Errorf("not valid for %s: %v", loopback, err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

// listenFakeTLS serves fakeBackend on a loopback port behind PostgreSQL's
// TLS negotiation: an SSLRequest answered with answer ('S' or 'N'), then
// with 'S' a TLS handshake with a certificate from writeServerCert.
func listenFakeTLS(t *testing.T, answer byte) string {
	certFile, keyFile, err := writeServerCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	return serveLoopback(t, func(c net.Conn) {
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil || binary.BigEndian.Uint32(req[4:]) != sslRequestCode {
			t.Errorf("backend: SSLRequest %x, %v", req, err)
			c.Close()
			return
		}
		c.Write([]byte{answer})
		if answer != 'S' {
			c.Close()
			return
		}
		fakeBackend(t, tls.Server(c, cfg), false)
	})
}

func TestOpenIdleClientsTLS(t *testing.T) {
	addr := listenFakeTLS(t, 'S')
	conns, failed, firstErr := openIdleClients(context.Background(), addr, 20, 4, idleTLSConfig())
	if len(conns) != 20 || failed != 0 || firstErr != nil {
		t.Fatalf("%d connected, %d failed (%v); want 20 and none", len(conns), failed, firstErr)
	}
	tc, ok := conns[0].(*tls.Conn)
	if !ok {
		t.Fatalf("connection %T, want *tls.Conn", conns[0])
	}
	if got := describeTLS(tc.ConnectionState()); !strings.HasPrefix(got, "TLS 1.3, TLS_") {
		t.Errorf("negotiated %q, want TLS 1.3", got)
	}
	for _, c := range conns {
		closeIdleClient(c)
	}

	refused := listenFakeTLS(t, 'N')
	conns, failed, firstErr = openIdleClients(context.Background(), refused, 3, 2, idleTLSConfig())
	if len(conns) != 0 || failed != 3 || !errors.Is(firstErr, errTLSRefused) {
		t.Errorf("with TLS refused: %d connected, %d failed, first error %v", len(conns), failed, firstErr)
	}
}

func TestParseSClient(t *testing.T) {
	out := `CONNECTED(00000003)
---
Certificate chain
 0 s:CN = sluice-bench
---
SSL handshake has read 768 bytes and written 413 bytes
Verification error: self-signed certificate
---
New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384
Server public key is 256 bit
This TLS version forbids renegotiation.
`
	if got, err := parseSClient(out); got != "TLSv1.3, TLS_AES_256_GCM_SHA384" || err != nil {
		t.Errorf("parseSClient = %q, %v", got, err)
	}
	// A failed handshake prints "New, (NONE), Cipher is (NONE)".
	if got, err := parseSClient("CONNECTED(00000003)\n---\nNew, (NONE), Cipher is (NONE)\n"); err == nil {
		t.Errorf("a failed handshake parsed as %q", got)
	}
	if _, err := parseSClient("connect: Connection refused\n"); err == nil {
		t.Error("output without a handshake parsed")
	}
}

func TestTLSProxyConfig(t *testing.T) {
	certFile, keyFile, err := writeServerCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Sluice: the listener requires TLS with the certificate; the rest is
	// sluice's configuration.
	plain := sluiceSetup{port: 7000, pgAddr: "127.0.0.1:5000", poolSize: 20, engine: config.EngineLoop, adminPort: 7001}
	withTLS := plain
	withTLS.certFile, withTLS.keyFile = certFile, keyFile
	cfg, err := config.Parse([]byte(withTLS.configHCL()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, withTLS.configHCL())
	}
	l := cfg.Listeners[0]
	if !l.RequireTLS || l.TLS == nil || l.TLS.CertFile != certFile || l.TLS.KeyFile != keyFile {
		t.Errorf("listener RequireTLS %v, TLS %+v", l.RequireTLS, l.TLS)
	}
	plainCfg, err := config.Parse([]byte(plain.configHCL()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pl := plainCfg.Listeners[0]; pl.RequireTLS || pl.TLS != nil {
		t.Errorf("plaintext listener RequireTLS %v, TLS %+v", pl.RequireTLS, pl.TLS)
	}
	if cfg.Engine != plainCfg.Engine || cfg.Clusters["main"].TLS != plainCfg.Clusters["main"].TLS {
		t.Errorf("engine %q / %q, cluster TLS %+v / %+v: the TLS twin differs beyond its listener",
			cfg.Engine, plainCfg.Engine, cfg.Clusters["main"].TLS, plainCfg.Clusters["main"].TLS)
	}

	// PgBouncer: client TLS required, the server side untouched.
	ini := pgbouncerSetup{dir: "/tmp/x", certFile: certFile, keyFile: keyFile}.pgbouncerINI()
	for _, want := range []string{"\nclient_tls_sslmode = require\n", "\nclient_tls_cert_file = " + certFile + "\n", "\nclient_tls_key_file = " + keyFile + "\n"} {
		if !strings.Contains(ini, want) {
			t.Errorf("pgbouncer.ini lacks %q:\n%s", want, ini)
		}
	}
	if strings.Contains(ini, "server_tls") {
		t.Errorf("pgbouncer.ini sets server TLS:\n%s", ini)
	}
	if ini := (pgbouncerSetup{dir: "/tmp/x"}).pgbouncerINI(); strings.Contains(ini, "tls") {
		t.Errorf("plaintext pgbouncer.ini mentions TLS:\n%s", ini)
	}
}

func TestClientEnvSSLMode(t *testing.T) {
	t.Setenv("PGSSLMODE", "verify-full")
	t.Setenv("PGHOST", "elsewhere")
	for sslmode, want := range map[string]string{"": "PGSSLMODE=disable", sslDisable: "PGSSLMODE=disable", sslRequire: "PGSSLMODE=require"} {
		env := clientEnv(sslmode)
		var pg []string
		for _, kv := range env {
			if strings.HasPrefix(kv, "PG") {
				pg = append(pg, kv)
			}
		}
		slices.Sort(pg)
		if w := []string{"PGPASSWORD=" + benchPassword, want}; !slices.Equal(pg, w) {
			t.Errorf("clientEnv(%q) PG variables = %q, want %q", sslmode, pg, w)
		}
	}
}
