package proxy_test

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// psql runs one command through Sluice with psql and returns its output.
func (e *testEnv) psql(t *testing.T, password, sslmode, sql string) (string, error) {
	t.Helper()
	host, port, _ := strings.Cut(e.addr, ":")
	cmd := exec.Command("psql", "-X", "-A", "-t", "-h", host, "-p", port, "-U", appUser, "-d", "appdb", "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE="+sslmode, "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestSCRAMWithPsqlAndPgx(t *testing.T) {
	e := newEnv(t, envOptions{})
	out, err := e.psql(t, appPassword, clientSSLMode(), "SELECT current_user")
	if err != nil || strings.TrimSpace(out) != appUser {
		t.Fatalf("psql with SCRAM: %v\n%s", err, out)
	}
	c := e.connect(t)
	var user string
	if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&user); err != nil || user != appUser {
		t.Fatalf("pgx with SCRAM: %q, %v", user, err)
	}
}

func TestWrongPasswordAndUnknownUser(t *testing.T) {
	for _, method := range []string{"scram-sha-256", "md5"} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t, envOptions{auth: method})
			su := e.superuser(t)
			before := e.serverConns(t, su)
			ctx := context.Background()
			host, port, _ := strings.Cut(e.addr, ":")
			for _, url := range []string{
				"postgres://app:wrong@" + host + ":" + port + "/appdb?sslmode=" + clientSSLMode(),
				"postgres://nobody:whatever@" + host + ":" + port + "/appdb?sslmode=" + clientSSLMode(),
			} {
				_, err := pgx.Connect(ctx, url)
				if code := sqlstate(err); code != "28P01" {
					t.Errorf("%s: err %v, want SQLSTATE 28P01", url, err)
				}
			}
			out, err := e.psql(t, "wrong", clientSSLMode(), "SELECT 1")
			if err == nil || !strings.Contains(out, "password authentication failed") {
				t.Errorf("psql with a wrong password: %v\n%s", err, out)
			}
			if after := e.serverConns(t, su); after != before {
				t.Errorf("failed logins opened server connections: %d before, %d after", before, after)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	cert, key := writeCert(t)
	tlsBlock := `tls {
    cert_file = "` + cert + `"
    key_file  = "` + key + `"
  }`
	t.Run("sslmode=require", func(t *testing.T) {
		e := newEnv(t, envOptions{listen: tlsBlock})
		out, err := e.psql(t, appPassword, "require", `\conninfo`)
		if err != nil || !strings.Contains(out, "SSL connection") {
			t.Fatalf("psql sslmode=require: %v\n%s", err, out)
		}
		c := e.connect(t, "sslmode=disable") // plaintext still allowed
		var one int
		if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(e.addr, ":")
		tc, err := pgx.Connect(context.Background(), "postgres://app:"+appPassword+"@"+host+":"+port+"/appdb?sslmode=require")
		if err != nil {
			t.Fatalf("pgx sslmode=require: %v", err)
		}
		defer tc.Close(context.Background())
		if _, ok := tc.PgConn().Conn().(*tls.Conn); !ok {
			t.Fatalf("pgx sslmode=require connection is %T, not TLS", tc.PgConn().Conn())
		}
	})
	t.Run("require_tls", func(t *testing.T) {
		e := newEnv(t, envOptions{listen: tlsBlock + "\n  require_tls = true"})
		out, err := e.psql(t, appPassword, "disable", "SELECT 1")
		if err == nil || !strings.Contains(out, "requires TLS") {
			t.Fatalf("plaintext client was not refused: %v\n%s", err, out)
		}
		out, err = e.psql(t, appPassword, "require", "SELECT 1")
		if err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("TLS client refused: %v\n%s", err, out)
		}
	})
}

// TestClientTLS: the clients the test helpers open through every listener
// use TLS exactly when SLUICE_TEST_CLIENT_TLS says so, so that the TLS run
// of the suite cannot quietly run plaintext.
func TestClientTLS(t *testing.T) {
	if v, ok := os.LookupEnv(clientTLSEnv); ok {
		if _, err := strconv.ParseBool(v); err != nil {
			t.Fatalf("%s=%q is not a boolean", clientTLSEnv, v)
		}
	}
	e := newEnv(t, envOptions{replicas: 1, split: true})
	for _, l := range []struct{ name, addr string }{{"main", e.addr}, {"reader", e.readerAddr}, {"split", e.splitAddr}} {
		c := e.connectTo(t, l.addr)
		if _, ok := c.PgConn().Conn().(*tls.Conn); ok != clientTLS() {
			t.Errorf("listener %s: client connection is a %T, want TLS %v", l.name, c.PgConn().Conn(), clientTLS())
		}
	}
	out, err := e.psql(t, appPassword, clientSSLMode(), `\conninfo`)
	if err != nil || strings.Contains(out, "SSL connection") != clientTLS() {
		t.Errorf("psql sslmode=%s, want TLS %v: %v\n%s", clientSSLMode(), clientTLS(), err, out)
	}
}
