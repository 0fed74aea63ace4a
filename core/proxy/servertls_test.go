package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/core/proxy"
)

// serverCA is a throwaway CA, the file a cluster's tls.ca_file names, and
// a server certificate it signed for localhost and 127.0.0.1.
type serverCA struct {
	file string
	cert *pgtest.TLS
}

func newServerCA(t *testing.T) serverCA {
	t.Helper()
	ca, err := pgtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerTLS("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return serverCA{file: file, cert: cert}
}

// tlsBlock returns a cluster's tls block; empty settings are left out.
func tlsBlock(mode, caFile, serverName string) string {
	b := fmt.Sprintf("tls {\n    mode = %q\n", mode)
	if caFile != "" {
		b += fmt.Sprintf("    ca_file = %q\n", caFile)
	}
	if serverName != "" {
		b += fmt.Sprintf("    server_name = %q\n", serverName)
	}
	return b + "  }"
}

// serverUsesTLS reports whether the server connection behind c is
// encrypted, as PostgreSQL sees it.
func serverUsesTLS(t *testing.T, c *pgx.Conn) bool {
	t.Helper()
	var ssl bool
	if err := c.QueryRow(context.Background(),
		"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	return ssl
}

// connectFails connects through Sluice, expects a PostgreSQL error and
// returns it.
func connectFails(t *testing.T, e *testEnv) *pgconn.PgError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.url())
	if err == nil {
		c.Close(ctx)
		t.Fatal("connected through sluice, want an error")
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("connect: %v, want an error from sluice", err)
	}
	if strings.Contains(pe.Message+pe.Detail+pe.Hint, "127.0.0.1") {
		t.Errorf("the client sees the server's address: %+v", pe)
	}
	return pe
}

// reload parses e's configuration with old replaced by new and reloads the
// proxy with it.
func (e *testEnv) reload(t *testing.T, old, new string) error {
	t.Helper()
	src := strings.Replace(e.cfg, old, new, 1)
	if src == e.cfg {
		t.Fatalf("%q is not in the configuration", old)
	}
	cfg, err := config.Parse([]byte(src), engineEnviron())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return e.proxy.Reload(cfg)
}

func TestServerTLSVerifyFull(t *testing.T) {
	ca := newServerCA(t)
	e := newEnv(t, envOptions{pg: pgtest.Options{TLS: ca.cert}, cluster: tlsBlock("verify-full", ca.file, "localhost")})
	c := e.connect(t)
	if !serverUsesTLS(t, c) {
		t.Error("verify-full: the server connection is not encrypted")
	}
	var n int
	if err := c.QueryRow(context.Background(), "SELECT 40 + 2").Scan(&n); err != nil || n != 42 {
		t.Fatalf("query over TLS: %d, %v", n, err)
	}
}

func TestServerTLSVerifyFullWrongName(t *testing.T) {
	ca := newServerCA(t)
	e := newEnv(t, envOptions{pg: pgtest.Options{TLS: ca.cert}, cluster: tlsBlock("verify-full", ca.file, "wrong.example")})
	for i := 0; i < 2; i++ {
		pe := connectFails(t, e)
		if pe.Code != "08001" || !strings.Contains(pe.Message, `TLS certificate of the server of cluster "main" failed verification`) ||
			!strings.Contains(pe.Detail, "not valid for the expected server name") {
			t.Fatalf("attempt %d: %s %q (detail %q), want 08001 about the TLS certificate's name", i+1, pe.Code, pe.Message, pe.Detail)
		}
	}
	// The proxy keeps serving: a reload with the right name fixes it.
	if err := e.reload(t, `server_name = "wrong.example"`, `server_name = "localhost"`); err != nil {
		t.Fatal(err)
	}
	if !serverUsesTLS(t, e.connect(t)) {
		t.Error("after the reload: the server connection is not encrypted")
	}
}

func TestServerTLSVerifyCA(t *testing.T) {
	ca := newServerCA(t)
	e := newEnv(t, envOptions{pg: pgtest.Options{TLS: ca.cert}, cluster: tlsBlock("verify-ca", ca.file, "not-in-the-certificate.example")})
	if !serverUsesTLS(t, e.connect(t)) {
		t.Error("verify-ca: the server connection is not encrypted")
	}
}

func TestServerTLSVerifyFullOtherCA(t *testing.T) {
	ca, other := newServerCA(t), newServerCA(t)
	e := newEnv(t, envOptions{pg: pgtest.Options{TLS: ca.cert}, cluster: tlsBlock("verify-full", other.file, "")})
	pe := connectFails(t, e)
	if pe.Code != "08001" || !strings.Contains(pe.Message, "TLS certificate") ||
		!strings.Contains(pe.Detail, "not signed by a certificate authority in tls.ca_file") {
		t.Fatalf("%s %q (detail %q), want 08001 about the certificate's authority", pe.Code, pe.Message, pe.Detail)
	}
}

func TestServerTLSRequireWithoutTLS(t *testing.T) {
	e := newEnv(t, envOptions{cluster: tlsBlock("require", "", "")})
	pe := connectFails(t, e)
	if want := `the server of cluster "main" does not support TLS, but tls.mode is "require"`; pe.Code != "08001" || pe.Message != want {
		t.Fatalf("%s %q, want 08001 %q", pe.Code, pe.Message, want)
	}
}

func TestServerTLSPrefer(t *testing.T) {
	ca := newServerCA(t)
	tests := []struct {
		name    string
		pg      pgtest.Options
		cluster string
		wantTLS bool
	}{
		{"without TLS on the server", pgtest.Options{}, tlsBlock("prefer", "", ""), false},
		{"with TLS on the server", pgtest.Options{TLS: ca.cert}, tlsBlock("prefer", "", ""), true},
		{"by default", pgtest.Options{TLS: ca.cert}, "", true},
		{"disable", pgtest.Options{TLS: ca.cert}, tlsBlock("disable", "", ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{pg: tt.pg, cluster: tt.cluster})
			if got := serverUsesTLS(t, e.connect(t)); got != tt.wantTLS {
				t.Errorf("server connection encrypted: %v, want %v", got, tt.wantTLS)
			}
		})
	}
}

func TestServerTLSBadCAFile(t *testing.T) {
	ca := newServerCA(t)
	e := newEnv(t, envOptions{pg: pgtest.Options{TLS: ca.cert}, cluster: tlsBlock("verify-full", ca.file, "")})
	notPEM := filepath.Join(t.TempDir(), "not-a-ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := `cluster "main".tls.ca_file: no PEM certificate found in "` + notPEM + `"`
	err := e.reload(t, ca.file, notPEM)
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, proxy.ErrNoCertificates) {
		t.Fatalf("reload with a ca_file without certificates: %v, want %q", err, want)
	}
	if !serverUsesTLS(t, e.connect(t)) {
		t.Error("after a rejected reload: the server connection is not encrypted")
	}

	cfg, err := config.Parse([]byte(strings.Replace(e.cfg, ca.file, notPEM, 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := proxy.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))); err == nil {
		p.Close()
		t.Fatal("proxy.New accepted a ca_file without certificates")
	} else if !strings.Contains(err.Error(), want) {
		t.Errorf("proxy.New: %v, want %q", err, want)
	}
}

func TestCancelOverServerTLS(t *testing.T) {
	ca := newServerCA(t)
	e := newEnv(t, envOptions{pool: "max_connections = 2", pg: pgtest.Options{TLS: ca.cert},
		cluster: tlsBlock("verify-full", ca.file, "")})
	cfg, err := pgx.ParseConfig(e.url())
	if err != nil {
		t.Fatal(err)
	}
	// Only a CancelRequest may end the query: pgx must not fall back to
	// closing its connection within the test's time.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 20 * time.Second}
	}
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if !serverUsesTLS(t, c) {
		t.Fatal("the server connection is not encrypted")
	}
	cancelSleep(t, e, c, "tls-cancel")
	if !serverUsesTLS(t, c) {
		t.Error("after the cancel: the server connection is not encrypted")
	}
}
