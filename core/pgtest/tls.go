package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The files, relative to the data directory, that hold Options.TLS.
const (
	serverCertFile = "pgtest-server.crt"
	serverKeyFile  = "pgtest-server.key"
)

// certLifetime is how long the certificates a CA issues stay valid. They
// start an hour in the past, so that a clock a little behind still accepts
// them.
const certLifetime = 24 * time.Hour

// TLS is the certificate that a server started with Options.TLS presents
// to clients that ask for TLS. [CA.ServerTLS] makes one for tests.
type TLS struct {
	// CertPEM is the PEM certificate chain: the server's certificate
	// first, then any intermediate certificates.
	CertPEM []byte
	// KeyPEM is the PEM private key of the server's certificate.
	KeyPEM []byte
}

// check reports whether t holds a certificate and key that belong together.
func (t *TLS) check() error {
	if len(t.CertPEM) == 0 || len(t.KeyPEM) == 0 {
		return errors.New("pgtest: Options.TLS needs both CertPEM and KeyPEM")
	}
	if _, err := tls.X509KeyPair(t.CertPEM, t.KeyPEM); err != nil {
		return fmt.Errorf("pgtest: Options.TLS: %w", err)
	}
	return nil
}

// CA is a throwaway certificate authority for tests: an ECDSA P-256 key and
// a self-signed certificate that live only in memory. It is immutable and
// safe for concurrent use.
type CA struct {
	// CertPEM is the CA's certificate in PEM, the content of a root
	// certificate file (libpq's sslrootcert, Sluice's tls.ca_file) that
	// trusts the certificates this CA issues.
	CertPEM []byte

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a certificate authority valid from an hour ago for a day.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pgtest: generating a CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("pgtest CA %x", serial)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pgtest: creating the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parsing the CA certificate: %w", err)
	}
	return &CA{CertPEM: pemBlock("CERTIFICATE", der), cert: cert, key: key}, nil
}

// ServerTLS issues a server certificate, with a new ECDSA P-256 key, for
// hosts: DNS names (such as "localhost") and IP addresses (such as
// "127.0.0.1"), which become its subject alternative names. A client that
// trusts ca and connects to one of hosts verifies it fully.
func (ca *CA) ServerTLS(hosts ...string) (*TLS, error) {
	if len(hosts) == 0 {
		return nil, errors.New("pgtest: a server certificate needs at least one host name or address")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pgtest: generating a server key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			template.IPAddresses = append(template.IPAddresses, ip)
		} else {
			template.DNSNames = append(template.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pgtest: creating a server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pgtest: encoding a server key: %w", err)
	}
	return &TLS{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", keyDER)}, nil
}

// serialNumber returns a random 128-bit certificate serial number.
func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pgtest: generating a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// pemBlock encodes der as one PEM block of type typ.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// WriteFiles writes the certificate chain and the key to dir as
// server.crt and server.key (the key readable by its owner only), for a
// configuration that names files, and returns their paths.
func (t *TLS) WriteFiles(dir string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, t.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, t.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
