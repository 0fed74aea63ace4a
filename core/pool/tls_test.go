package pool

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/core/wire"
)

// tlsServers are a PostgreSQL server with ssl on, its certificate valid for
// localhost and 127.0.0.1 and signed by ca, and one with ssl off.
type tlsServers struct {
	tls, plain *pgtest.Server
	ca, other  *x509.CertPool // other is a CA that signed nothing here
}

func startTLSServers(t *testing.T) *tlsServers {
	t.Helper()
	ca := newCertPool(t)
	cert, err := ca.ca.ServerTLS("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return &tlsServers{
		tls:   pgtest.Start(t, pgtest.Options{TLS: cert}),
		plain: pgtest.Start(t, pgtest.Options{}),
		ca:    ca.pool,
		other: newCertPool(t).pool,
	}
}

// certPool is a throwaway CA and a pool that trusts it.
type certPool struct {
	ca   *pgtest.CA
	pool *x509.CertPool
}

func newCertPool(t *testing.T) certPool {
	t.Helper()
	ca, err := pgtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(ca.CertPEM) {
		t.Fatal("the CA certificate does not parse")
	}
	return certPool{ca: ca, pool: p}
}

// endpoint returns an endpoint for srv's superuser with settings t.
func endpoint(srv *pgtest.Server, t TLS) Endpoint {
	return Endpoint{
		Addr: srv.Addr(), Name: `cluster "main"`, Database: "postgres",
		User: pgtest.Superuser, Password: srv.SuperuserPassword(),
		ConnectTimeout: 10 * time.Second, TLS: t,
	}
}

// usesTLS asks the server whether c's session is encrypted.
func usesTLS(t *testing.T, c *Conn) bool {
	t.Helper()
	row, err := c.QueryRow("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
	if err != nil {
		t.Fatal(err)
	}
	return row[0] == "t"
}

func TestConnectTLSModes(t *testing.T) {
	s := startTLSServers(t)
	tests := []struct {
		name    string
		server  *pgtest.Server
		tls     TLS
		wantTLS bool
	}{
		{"disable", s.tls, TLS{}, false},
		{"prefer with TLS", s.tls, TLS{Mode: TLSPrefer}, true},
		{"prefer without TLS", s.plain, TLS{Mode: TLSPrefer}, false},
		{"require", s.tls, TLS{Mode: TLSRequire}, true},
		{"require ignores the CA", s.tls, TLS{Mode: TLSRequire, RootCAs: s.other}, true},
		{"verify-ca with a name not in the certificate", s.tls,
			TLS{Mode: TLSVerifyCA, RootCAs: s.ca, ServerName: "not-in-the-certificate.example"}, true},
		{"verify-full with server_name", s.tls, TLS{Mode: TLSVerifyFull, RootCAs: s.ca, ServerName: "localhost"}, true},
		{"verify-full with the host of Addr", s.tls, TLS{Mode: TLSVerifyFull, RootCAs: s.ca}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Connect(context.Background(), endpoint(tt.server, tt.tls))
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer c.Close()
			if got := usesTLS(t, c); got != tt.wantTLS {
				t.Errorf("pg_stat_ssl.ssl = %v, want %v", got, tt.wantTLS)
			}
			if _, isTLS := c.netConn.(*tls.Conn); isTLS != tt.wantTLS {
				t.Errorf("connection is a *tls.Conn: %v, want %v", isTLS, tt.wantTLS)
			}
			if _, ok := c.RawConn().(*net.TCPConn); !ok {
				t.Errorf("RawConn() is a %T, want the *net.TCPConn", c.RawConn())
			}
		})
	}
}

func TestConnectTLSFailures(t *testing.T) {
	s := startTLSServers(t)
	var (
		hostname  x509.HostnameError
		authority x509.UnknownAuthorityError
	)
	tests := []struct {
		name    string
		server  *pgtest.Server
		tls     TLS
		message string // the client-facing message contains it
		detail  string
		cause   any // errors.As finds this in the error
	}{
		{"require without TLS", s.plain, TLS{Mode: TLSRequire},
			`the server of cluster "main" does not support TLS, but tls.mode is "require"`, "", &ErrTLSNotSupported},
		{"verify-full without TLS", s.plain, TLS{Mode: TLSVerifyFull, RootCAs: s.ca},
			`does not support TLS, but tls.mode is "verify-full"`, "", &ErrTLSNotSupported},
		{"verify-full with a wrong name", s.tls, TLS{Mode: TLSVerifyFull, RootCAs: s.ca, ServerName: "wrong.example"},
			`the TLS certificate of the server of cluster "main" failed verification (tls.mode "verify-full")`,
			"not valid for the expected server name", &hostname},
		{"verify-full with another CA", s.tls, TLS{Mode: TLSVerifyFull, RootCAs: s.other, ServerName: "localhost"},
			`the TLS certificate of the server of cluster "main" failed verification`,
			"not signed by a certificate authority in tls.ca_file", &authority},
		{"verify-ca with another CA", s.tls, TLS{Mode: TLSVerifyCA, RootCAs: s.other},
			`failed verification (tls.mode "verify-ca")`, "not signed by a certificate authority", &authority},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Connect(context.Background(), endpoint(tt.server, tt.tls))
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeUnableToConnect {
				t.Fatalf("err = %v, want a *wire.Error with SQLSTATE 08001", err)
			}
			if !strings.Contains(we.Message, tt.message) || !strings.Contains(we.Detail, tt.detail) {
				t.Errorf("message %q, detail %q; want them to contain %q and %q", we.Message, we.Detail, tt.message, tt.detail)
			}
			if visible := we.Message + we.Detail + we.Hint; strings.Contains(visible, "127.0.0.1") || strings.Contains(visible, "postgres") {
				t.Errorf("the client would see an address or a credential: %q", visible)
			}
			if target, ok := tt.cause.(*error); ok {
				if !errors.Is(err, *target) {
					t.Errorf("err = %v, want it to wrap %v", err, *target)
				}
			} else if !errors.As(err, tt.cause) {
				t.Errorf("err = %v, want it to wrap a %T", err, tt.cause)
			}
			if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), tt.server.Addr()) {
				t.Errorf("err = %v, want ErrConnect and the address for the logs", err)
			}
		})
	}
}

// TestConnectRejectsABadTLSAnswer uses a fake server: PostgreSQL always
// answers S or N.
func TestConnectRejectsABadTLSAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		req := make([]byte, 8)
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Read(req); err == nil {
			got <- req
		}
		nc.Write([]byte{'E'})
		nc.Read(req) // until the client hangs up
	}()
	_, err = Connect(context.Background(), Endpoint{Addr: ln.Addr().String(), Name: `cluster "main"`,
		User: "u", Database: "d", ConnectTimeout: 10 * time.Second, TLS: TLS{Mode: TLSPrefer}})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeProtocolViolation || !errors.Is(err, ErrTLSAnswer) {
		t.Fatalf("err = %v, want SQLSTATE 08P01 wrapping ErrTLSAnswer", err)
	}
	if want := `the server of cluster "main" answered the request for TLS with neither S nor N`; we.Message != want {
		t.Errorf("message %q, want %q", we.Message, want)
	}
	if req := <-got; string(req) != string(wire.EncodeSSLRequest()) {
		t.Errorf("the server received %x, want an SSLRequest", req)
	}
}

func TestTLSConnDeadlinesAndHealthCheck(t *testing.T) {
	s := startTLSServers(t)
	c, err := Connect(context.Background(), endpoint(s.tls, TLS{Mode: TLSVerifyFull, RootCAs: s.ca}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.alive() {
		t.Fatal("a fresh TLS connection fails the health check")
	}

	// A read interrupted by its deadline under TLS can be resumed.
	if err := c.W.WriteMessage(wire.AppendQuery(nil, "SELECT pg_sleep(0.2), 42")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now())
	if _, _, err := c.R.ReadMessage(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a past deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	var row []string
	for {
		typ, body, err := c.R.ReadMessage()
		if err != nil {
			t.Fatalf("read after the timeout: %v", err)
		}
		if typ == wire.MsgDataRow {
			row, _ = wire.ParseDataRow(body)
		}
		if typ == wire.MsgReadyForQuery {
			break
		}
	}
	if len(row) != 2 || row[1] != "42" {
		t.Fatalf("row after the interrupted read = %q, want 42", row)
	}

	// The health check sees the backend's FATAL beneath the encryption.
	su, err := pgx.Connect(context.Background(), s.tls.SuperuserConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(context.Background())
	if _, err := su.Exec(context.Background(), "SELECT pg_terminate_backend($1)", int(c.ProcessID)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.alive() {
		if time.Now().After(deadline) {
			t.Fatal("the health check still passes 10s after the backend was terminated")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCancel(t *testing.T) {
	s := startTLSServers(t)
	tests := []struct {
		name   string
		server *pgtest.Server
		tls    TLS
	}{
		{"verify-full", s.tls, TLS{Mode: TLSVerifyFull, RootCAs: s.ca}},
		{"require", s.tls, TLS{Mode: TLSRequire}},
		{"prefer without TLS", s.plain, TLS{Mode: TLSPrefer}},
		{"disable", s.plain, TLS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Connect(context.Background(), endpoint(tt.server, tt.tls))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			su, err := pgx.Connect(context.Background(), tt.server.SuperuserConnString("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer su.Close(context.Background())

			errc := make(chan error, 1)
			go func() { errc <- c.Exec("SELECT pg_sleep(30)") }()
			deadline := time.Now().Add(10 * time.Second)
			for {
				var state string
				err := su.QueryRow(context.Background(),
					"SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1", int(c.ProcessID)).Scan(&state)
				if err != nil {
					t.Fatal(err)
				}
				if state == "active" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the query never became active")
				}
				time.Sleep(5 * time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Cancel(ctx); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			select {
			case err := <-errc:
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != wire.CodeQueryCanceled {
					t.Fatalf("pg_sleep(30) ended with %v, want SQLSTATE 57014", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the query was not cancelled within 5s")
			}
			if row, err := c.QueryRow("SELECT 1"); err != nil || row[0] != "1" {
				t.Fatalf("connection after the cancel: %q, %v", row, err)
			}
		})
	}
	t.Run("bounded by its context", func(t *testing.T) {
		c, err := Connect(context.Background(), endpoint(s.tls, TLS{Mode: TLSRequire}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := c.Cancel(ctx); !errors.Is(err, ErrCancel) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Cancel with an ended context: %v, want ErrCancel and context.Canceled", err)
		}
	})
}

func TestParseTLSMode(t *testing.T) {
	for m := TLSDisable; m <= TLSVerifyFull; m++ {
		got, err := ParseTLSMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseTLSMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if _, err := ParseTLSMode("verify_full"); !errors.Is(err, ErrUnknownTLSMode) {
		t.Errorf("ParseTLSMode(verify_full): %v, want ErrUnknownTLSMode", err)
	}
}
