package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pool"
)

// ErrNoCertificates is wrapped by the error for a tls.ca_file that holds
// no PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificate found")

// loadClusterTLS returns the pool's TLS setting for each cluster, by
// name, with the CA certificates of each ca_file loaded. The error names
// the first cluster, in name order, and the key at fault.
func loadClusterTLS(clusters map[string]config.Cluster) (map[string]pool.TLS, error) {
	out := make(map[string]pool.TLS, len(clusters))
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		t, err := loadServerTLS(clusters[name].TLS)
		if err != nil {
			return nil, fmt.Errorf("cluster %q.%w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// loadServerTLS turns a cluster's tls block into the pool's TLS setting,
// reading the CA certificates of ca_file for the modes that verify. Errors
// start with the key at fault, relative to the cluster block.
func loadServerTLS(c config.ServerTLS) (pool.TLS, error) {
	mode, err := pool.ParseTLSMode(string(c.Mode))
	if err != nil {
		return pool.TLS{}, fmt.Errorf("tls.mode: %w", err)
	}
	t := pool.TLS{Mode: mode, ServerName: c.ServerName}
	if !c.Mode.Verifies() {
		return t, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return pool.TLS{}, fmt.Errorf("tls.ca_file: %w", err)
	}
	t.RootCAs = x509.NewCertPool()
	if !t.RootCAs.AppendCertsFromPEM(pem) {
		return pool.TLS{}, fmt.Errorf("tls.ca_file: %w in %q", ErrNoCertificates, c.CAFile)
	}
	return t, nil
}

// ServerTLS returns the TLS settings a cluster block's tls block makes for
// connections to its servers, for other packages that connect to them
// (discovery's probes).
func ServerTLS(c config.Cluster) (pool.TLS, error) { return loadServerTLS(c.TLS) }
