package pool

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/sluicedb/sluice/core/wire"
)

// TLSMode says whether and how a server connection uses TLS. The modes
// mean what libpq's sslmode means; see
// https://www.postgresql.org/docs/15/libpq-ssl.html#LIBPQ-SSL-PROTECTION.
type TLSMode int

// The TLS modes, weakest first. The zero value is TLSDisable.
const (
	// TLSDisable speaks plaintext and sends no SSLRequest.
	TLSDisable TLSMode = iota
	// TLSPrefer sends an SSLRequest and uses TLS when the server accepts
	// it, plaintext when it declines. The certificate is not verified.
	TLSPrefer
	// TLSRequire insists on TLS, without verifying the certificate.
	TLSRequire
	// TLSVerifyCA insists on TLS with a certificate chain that leads to
	// one of TLS.RootCAs, whatever name the certificate carries.
	TLSVerifyCA
	// TLSVerifyFull is TLSVerifyCA where the certificate must also be
	// valid for TLS.ServerName, or else for the host of Endpoint.Addr.
	TLSVerifyFull
)

var tlsModeNames = [...]string{"disable", "prefer", "require", "verify-ca", "verify-full"}

// String returns the mode as libpq spells it, such as "verify-full".
func (m TLSMode) String() string {
	if m < 0 || int(m) >= len(tlsModeNames) {
		return fmt.Sprintf("TLSMode(%d)", int(m))
	}
	return tlsModeNames[m]
}

// ErrUnknownTLSMode is returned by ParseTLSMode for a name it does not know.
var ErrUnknownTLSMode = errors.New("unknown TLS mode")

// ParseTLSMode returns the mode that libpq calls name, such as "require".
func ParseTLSMode(name string) (TLSMode, error) {
	for m, n := range tlsModeNames {
		if n == name {
			return TLSMode(m), nil
		}
	}
	return TLSDisable, fmt.Errorf("%w %q", ErrUnknownTLSMode, name)
}

// TLS is how an Endpoint secures its server connections. The zero value
// is plaintext. A TLS value is not modified by the pool, so one may be
// shared by many endpoints and goroutines.
type TLS struct {
	// Mode says whether TLS is attempted, required and verified.
	Mode TLSMode
	// RootCAs are the certificate authorities TLSVerifyCA and
	// TLSVerifyFull trust; nil means the system's. The other modes ignore
	// them.
	RootCAs *x509.CertPool
	// ServerName is the name TLSVerifyFull expects in the certificate and
	// the name sent for server name indication in every mode; empty means
	// the host of Endpoint.Addr.
	ServerName string
}

// Errors wrapped by the *wire.Error values of a failed TLS negotiation.
var (
	// ErrTLSNotSupported means the server declined the SSLRequest while
	// the mode requires TLS.
	ErrTLSNotSupported = errors.New("server does not support TLS")
	// ErrTLSAnswer means the server answered the SSLRequest with neither
	// 'S' nor 'N'.
	ErrTLSAnswer = errors.New("invalid answer to SSLRequest")
	// ErrTLSHandshake means the TLS handshake failed, the certificate
	// check included; errors.As finds the *tls.CertificateVerificationError
	// and the x509 error beneath it when the certificate was at fault.
	ErrTLSHandshake = errors.New("TLS handshake failed")
)

// startTLS negotiates TLS on nc, a fresh connection to addr, as t.Mode
// asks, and returns the stream to speak the protocol over: a *tls.Conn,
// or nc itself in plaintext. server names the server in client-facing
// messages. The caller bounds the exchange with nc's deadline and closes
// nc when startTLS fails. Errors are *wire.Error values safe for clients;
// the address is only in what they wrap.
//
// The SSLRequest and its one-byte answer are written and read on nc
// without buffering, so that no plaintext byte that followed the answer
// can be taken as part of the encrypted stream.
func startTLS(nc net.Conn, addr, server string, t TLS) (net.Conn, error) {
	if t.Mode == TLSDisable {
		return nc, nil
	}
	if _, err := nc.Write(wire.EncodeSSLRequest()); err != nil {
		return nil, couldNotConnect(addr, fmt.Errorf("sending SSLRequest: %w", err))
	}
	var answer [1]byte
	if _, err := io.ReadFull(nc, answer[:]); err != nil {
		return nil, couldNotConnect(addr, fmt.Errorf("reading the answer to SSLRequest: %w", err))
	}
	switch answer[0] {
	case 'S':
	case 'N':
		if t.Mode == TLSPrefer {
			return nc, nil
		}
		return nil, wire.Errorf(wire.CodeUnableToConnect, "%s does not support TLS, but tls.mode is %q", server, t.Mode).
			Wrap(fmt.Errorf("%w: %w: %s", ErrConnect, ErrTLSNotSupported, addr))
	default:
		return nil, wire.Errorf(wire.CodeProtocolViolation, "%s answered the request for TLS with neither S nor N", server).
			Wrap(fmt.Errorf("%w: %w: %s sent %q", ErrConnect, ErrTLSAnswer, addr, answer[0]))
	}
	tc := tls.Client(nc, t.clientConfig(addr))
	if err := tc.Handshake(); err != nil {
		return nil, handshakeError(addr, server, t.Mode, err)
	}
	return tc, nil
}

// clientConfig returns the crypto/tls configuration for a connection to
// addr. libpq checks nothing in prefer and require mode and no name in
// verify-ca, so those modes skip crypto/tls's own verification; verify-ca
// checks the chain itself.
func (t TLS) clientConfig(addr string) *tls.Config {
	name := t.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(addr)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name, RootCAs: t.RootCAs}
	switch t.Mode {
	case TLSVerifyFull:
	case TLSVerifyCA:
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, t.RootCAs) }
	default:
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// verifyChain checks that the server's certificate chain leads to one of
// roots, as crypto/tls would, but without checking any name.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

// handshakeError describes a failed TLS handshake with the server at addr
// for a client, without the address or the names in the certificate.
func handshakeError(addr, server string, mode TLSMode, err error) *wire.Error {
	cause := fmt.Errorf("%w: %w: %s: %w", ErrConnect, ErrTLSHandshake, addr, err)
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		return wire.Errorf(wire.CodeUnableToConnect, "TLS handshake with %s failed", server).Wrap(cause)
	}
	we := wire.Errorf(wire.CodeUnableToConnect, "the TLS certificate of %s failed verification (tls.mode %q)", server, mode)
	we.Detail = certificateProblem(cve.Err)
	we.Hint = "Check tls.ca_file and tls.server_name in the cluster's configuration."
	return we.Wrap(cause)
}

// certificateProblem says in a sentence what was wrong with a certificate.
func certificateProblem(err error) string {
	var (
		hostname  x509.HostnameError
		authority x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &hostname):
		return "The certificate is not valid for the expected server name."
	case errors.As(err, &authority):
		return "The certificate is not signed by a certificate authority in tls.ca_file."
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "The certificate has expired or is not valid yet."
	}
	return "The certificate is not valid for a TLS server."
}

// couldNotConnect is the client-facing error for a server that could not
// be reached or failed before authentication.
func couldNotConnect(addr string, err error) *wire.Error {
	return wire.Errorf(wire.CodeConnectionFailure, "sluice could not connect to the database server").
		Wrap(fmt.Errorf("%w: %s: %w", ErrConnect, addr, err))
}
