package proxy_test

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// jdbcJar is where Debian's libpostgresql-jdbc-java installs the driver.
const jdbcJar = "/usr/share/java/postgresql.jar"

// driverEnv is a proxy with one server connection and few prepared
// statements per connection, so that two clients' named statements must be
// prepared again and again on the shared connection.
func driverEnv(t *testing.T) *testEnv {
	return newEnv(t, envOptions{pool: "max_connections = 1", pinning: "max_prepared_statements = 3"})
}

// checkNotPinned fails if a session that ran named statements was pinned.
func checkNotPinned(t *testing.T, e *testEnv) {
	t.Helper()
	if n := len(e.proxy.PinCounts()); n != 0 {
		t.Errorf("named statements pinned sessions: %v", e.proxy.PinCounts())
	}
}

func TestNodePostgresNamedQueries(t *testing.T) {
	dir, _ := filepath.Abs("testdata/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg")); err != nil {
		t.Fatalf("node-postgres is not installed in %s: run `make deps`", dir)
	}
	e := driverEnv(t)
	// uselibpqcompat: sslmode as libpq means it (require: encrypt, do not
	// verify the certificate), without node-postgres's warning that it
	// treats require as verify-full.
	cmd := exec.Command("node", "named.js", e.url("uselibpqcompat=true"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("node-postgres named queries: %v\n%s", err, out)
	}
	checkNotPinned(t, e)
}

func TestJDBCServerPreparedStatements(t *testing.T) {
	if _, err := os.Stat(jdbcJar); err != nil {
		t.Fatalf("the PostgreSQL JDBC driver is not installed at %s: run `make deps`", jdbcJar)
	}
	e := driverEnv(t)
	classes := t.TempDir()
	src, _ := filepath.Abs("testdata/jdbc/Named.java")
	if out, err := exec.Command("javac", "-d", classes, src).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	host, port, _ := strings.Cut(e.addr, ":")
	jdbcURL := "jdbc:postgresql://" + host + ":" + port + "/appdb?user=" + appUser +
		"&password=" + url.QueryEscape(appPassword) + "&sslmode=" + clientSSLMode() + "&prepareThreshold=1"
	out, err := exec.Command("java", "-cp", jdbcJar+string(os.PathListSeparator)+classes, "Named", jdbcURL).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("JDBC server-prepared statements: %v\n%s", err, out)
	}
	checkNotPinned(t, e)
}
