package proxy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicedb/sluice/core/pgtest"
)

// TestBackendAuthMethods logs in to PostgreSQL with each method it may ask
// of Sluice.
func TestBackendAuthMethods(t *testing.T) {
	for _, method := range []string{pgtest.AuthMD5, pgtest.AuthPassword, pgtest.AuthTrust} {
		t.Run(method, func(t *testing.T) {
			e := newEnv(t, envOptions{pg: pgtest.Options{AuthMethod: method}})
			var user string
			if err := e.connect(t).QueryRow(context.Background(), "SELECT current_user").Scan(&user); err != nil || user != appUser {
				t.Fatalf("through sluice with backend %s: %q, %v", method, user, err)
			}
		})
	}
}

func TestInitQueryRunsOnNewServerConnections(t *testing.T) {
	e := newEnv(t, envOptions{pool: `init_query = "SELECT pg_catalog.set_config('sluice.init', 'done', false)"`})
	var v string
	if err := e.connect(t).QueryRow(context.Background(), "SELECT current_setting('sluice.init')").Scan(&v); err != nil || v != "done" {
		t.Fatalf("init_query not applied: %q, %v", v, err)
	}
}

func TestNoticesReachTheClient(t *testing.T) {
	e := newEnv(t, envOptions{})
	cfg, err := pgconn.ParseConfig(e.url())
	if err != nil {
		t.Fatal(err)
	}
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	c, err := pgconn.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), "DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if len(notices) != 1 || notices[0] != "hello from the server" {
		t.Fatalf("notices = %q", notices)
	}
}

// TestFunctionCallWithPsqlLargeObjects uses psql's \lo_import and
// \lo_export, which libpq implements with the FunctionCall message.
func TestFunctionCallWithPsqlLargeObjects(t *testing.T) {
	e := newEnv(t, envOptions{})
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.bin"), filepath.Join(dir, "out.bin")
	data := []byte(strings.Repeat("large object bytes \x00\x01\x02 ", 5000))
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(e.addr, ":")
	script := `\lo_import ` + in + "\n" + `\lo_export :LASTOID ` + out + "\n"
	cmd := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", appUser, "-d", "appdb")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+appPassword, "PGSSLMODE="+clientSSLMode())
	cmd.Stdin = strings.NewReader(script)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql large objects: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != string(data) {
		t.Fatalf("large object round trip: %d bytes back of %d, %v", len(got), len(data), err)
	}
}
