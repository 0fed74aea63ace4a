package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/sluicedb/sluice/core/pgtest"
)

// TLS towards the clients (-tls): the TLS targets are the proxies of
// pgbouncer and sluice with a listener that requires TLS, presenting a
// certificate the harness makes (from a throwaway CA); pgbench and psql connect to
// them with sslmode=require (libpq encrypts but verifies nothing). The
// proxies' connections to PostgreSQL stay plaintext.
const (
	sslDisable = "disable"
	sslRequire = "require"
)

// writeServerCert writes a server certificate for 127.0.0.1 and
// localhost, issued by a throwaway CA, and its ECDSA P-256 key to dir (the
// key readable by its owner only), and returns their paths.
func writeServerCert(dir string) (certFile, keyFile string, err error) {
	ca, err := pgtest.NewCA()
	if err != nil {
		return "", "", err
	}
	st, err := ca.ServerTLS(loopback, "localhost")
	if err != nil {
		return "", "", err
	}
	return st.WriteFiles(dir)
}

// sslRequestCode is the SSLRequest message's request code: 1234 in the
// upper 16 bits, 5679 in the lower.
// https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL
const sslRequestCode = 80877103

// errTLSRefused is returned when a server answers an SSLRequest with 'N'.
var errTLSRefused = errors.New("the server answered the SSLRequest with 'N' (no TLS)")

// startTLS sends an SSLRequest on conn and, once the server has answered
// 'S', makes the TLS handshake as a client with cfg. The deadline already
// set on conn bounds it. On success the startup continues on the returned
// connection, which owns conn.
func startTLS(conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, fmt.Errorf("sending the SSLRequest: %w", err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return nil, fmt.Errorf("reading the answer to the SSLRequest: %w", err)
	}
	switch answer[0] {
	case 'S':
	case 'N':
		return nil, errTLSRefused
	default:
		return nil, fmt.Errorf("unexpected answer %q to the SSLRequest", answer[0])
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// idleTLSConfig is the TLS configuration of the idle stage's TLS clients:
// like libpq's sslmode=require, they encrypt and check nothing.
func idleTLSConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: loopback}
}

// describeTLS names a connection's TLS version and cipher suite, as in
// "TLS 1.3, TLS_AES_128_GCM_SHA256".
func describeTLS(s tls.ConnectionState) string {
	return tls.VersionName(s.Version) + ", " + tls.CipherSuiteName(s.CipherSuite)
}

// opensslBinary is where Debian's openssl package installs it.
const opensslBinary = "/usr/bin/openssl"

// sClientPattern matches the line `openssl s_client` prints once the
// handshake is done: "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384".
var sClientPattern = regexp.MustCompile(`(?m)^New, (\S+), Cipher is (\S+)`)

// parseSClient returns the protocol and cipher suite of `openssl
// s_client`'s output, as in "TLSv1.3, TLS_AES_256_GCM_SHA384".
func parseSClient(out string) (string, error) {
	m := sClientPattern.FindStringSubmatch(out)
	if m == nil || m[2] == "(NONE)" {
		return "", errors.New(`no "New, <protocol>, Cipher is <suite>" line in openssl s_client's output`)
	}
	return m[1] + ", " + m[2], nil
}

// opensslNegotiated returns the protocol and cipher suite an OpenSSL
// client with its defaults negotiates with the TLS listener at port
// (`openssl s_client -starttls postgres`): libpq, hence pgbench, uses
// OpenSSL, so this is what the pgbench runs get.
func opensslNegotiated(ctx context.Context, port int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, opensslBinary, "s_client", "-starttls", "postgres",
		"-connect", net.JoinHostPort(loopback, strconv.Itoa(port)))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Standard input at EOF: s_client closes once the handshake is done.
	cmd.Stdin = bytes.NewReader(nil)
	detach(cmd)
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	v, err := parseSClient(out.String())
	if err != nil {
		return "", errors.Join(err, runErr)
	}
	return v, nil
}

// verifyTLSRequired checks that the listener at port refuses a plaintext
// login, so that every run against it that succeeds has used TLS. It
// returns the refusal, for the verbose log.
func verifyTLSRequired(ctx context.Context, port int) (refusal error, err error) {
	if _, refusal = querySingle(ctx, port, "SELECT 1"); refusal == nil {
		return nil, errors.New("it accepted a plaintext client (sslmode=disable) although its listener should require TLS")
	}
	return refusal, nil
}
