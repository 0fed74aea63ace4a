package pgtest_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/pgtest"
)

// newCA returns a throwaway CA and the path of a file holding its
// certificate.
func newCA(t *testing.T) (*pgtest.CA, string) {
	t.Helper()
	ca, err := pgtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, path
}

// tlsConnString connects as the superuser to host:port of srv, verifying
// the server's certificate against rootCert for host.
func tlsConnString(srv *pgtest.Server, host, rootCert string) string {
	q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {rootCert}}
	return fmt.Sprintf("postgres://%s:%s@%s:%d/postgres?%s",
		pgtest.Superuser, url.QueryEscape(srv.SuperuserPassword()), host, srv.Port(), q.Encode())
}

func TestServerWithTLS(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ca, caFile := newCA(t)
	cert, err := ca.ServerTLS("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := pgtest.Start(t, pgtest.Options{TLS: cert})

	sslOf := func(conn *pgx.Conn) string {
		return queryString(t, ctx, conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		conn := connect(t, ctx, tlsConnString(srv, host, caFile))
		if got := sslOf(conn); got != "true" {
			t.Errorf("verify-full to %s: pg_stat_ssl.ssl = %s, want true", host, got)
		}
	}
	if got := sslOf(connect(t, ctx, srv.SuperuserConnString("postgres"))); got != "false" {
		t.Errorf("sslmode=disable: pg_stat_ssl.ssl = %s, want false: plaintext stays allowed", got)
	}

	_, otherCAFile := newCA(t)
	if conn, err := pgx.Connect(ctx, tlsConnString(srv, "localhost", otherCAFile)); err == nil {
		conn.Close(ctx)
		t.Error("verify-full with another CA's certificate connected")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("verify-full with another CA: %v, want a certificate error", err)
	}

	key := filepath.Join(srv.DataDir(), "pgtest-server.key")
	info, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("server key has mode %v, want 0600", perm)
	}
	dir, err := os.Stat(srv.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	if info.Sys().(*syscall.Stat_t).Uid != dir.Sys().(*syscall.Stat_t).Uid {
		t.Errorf("server key is not owned by the user that owns the data directory")
	}
}

func TestServerTLSNeedsAHost(t *testing.T) {
	t.Parallel()
	ca, err := pgtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ServerTLS(); err == nil {
		t.Error("ServerTLS with no host succeeded")
	}
}
