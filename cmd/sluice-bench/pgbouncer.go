package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// pgbouncerBinary is where Debian's pgbouncer package installs it.
const pgbouncerBinary = "/usr/sbin/pgbouncer"

// pgbouncerUnsupported maps the pgbench -M modes PgBouncer is not run
// with to why.
var pgbouncerUnsupported = map[string]string{
	"prepared": "PgBouncer before 1.21 cannot keep protocol-level prepared statements in transaction mode",
}

// pgbouncerSetup describes the PgBouncer the harness runs.
type pgbouncerSetup struct {
	dir      string // private directory for its ini, userlist and log
	port     int
	pgPort   int
	poolSize int
	// maxClientConn is max_client_conn; 0 means defaultMaxClientConn.
	maxClientConn int
	// cred is the user it runs as (it refuses root); nil runs it as the
	// harness's user.
	cred *syscall.Credential
	// certFile and keyFile, when set, are the certificate and key of
	// client TLS, which is then required (client_tls_sslmode = require).
	certFile, keyFile string
}

// pgbouncerINI renders pgbouncer.ini: transaction pooling of the bench
// database with the given pool size, md5 authentication against a userlist,
// TCP on loopback only, and with certFile TLS required of every client.
func (p pgbouncerSetup) pgbouncerINI() string {
	return fmt.Sprintf(`[databases]
%[1]s = host=%[2]s port=%[3]d dbname=%[1]s

[pgbouncer]
listen_addr = %[2]s
listen_port = %[4]d
unix_socket_dir =
auth_type = md5
auth_file = %[5]s
pool_mode = transaction
default_pool_size = %[6]d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = %[8]d
max_db_connections = 0
listen_backlog = 4096
ignore_startup_parameters = extra_float_digits
logfile = %[7]s
pidfile =
log_connections = 0
log_disconnections = 0
%[9]s`, benchDatabase, loopback, p.pgPort, p.port,
		filepath.Join(p.dir, "userlist.txt"), p.poolSize, filepath.Join(p.dir, "pgbouncer.log"), p.clientLimit(), p.clientTLS())
}

// clientTLS returns the ini lines of client TLS; "" without certFile.
// The connections to PostgreSQL keep PgBouncer's default (server_tls_sslmode
// = prefer, plaintext against the harness's server, which has no TLS).
func (p pgbouncerSetup) clientTLS() string {
	if p.certFile == "" {
		return ""
	}
	return fmt.Sprintf("client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n", p.certFile, p.keyFile)
}

// defaultMaxClientConn is PgBouncer's max_client_conn unless the idle
// stage needs more: above the largest pgbench client count.
const defaultMaxClientConn = 2000

// clientLimit returns max_client_conn.
func (p pgbouncerSetup) clientLimit() int {
	if p.maxClientConn > 0 {
		return p.maxClientConn
	}
	return defaultMaxClientConn
}

// start writes PgBouncer's files and starts it in the foreground as p.cred.
// It inherits the harness's raised open-file limit (unlike a start through
// su, which resets it to 1,024).
func (p pgbouncerSetup) start(context.Context) (*child, error) {
	files := map[string]string{
		"pgbouncer.ini": p.pgbouncerINI(),
		"userlist.txt":  fmt.Sprintf("%q %q\n", benchUser, benchPassword),
	}
	for name, content := range files {
		path := filepath.Join(p.dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return nil, err
		}
		if err := chownTo(path, p.cred); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(pgbouncerBinary, filepath.Join(p.dir, "pgbouncer.ini"))
	cmd.Dir = p.dir
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return startChild("pgbouncer", cmd, filepath.Join(p.dir, "pgbouncer.stderr"))
}

// chownTo hands path to cred's user; it does nothing for a nil cred.
func chownTo(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to uid %d: %w", path, cred.Uid, err)
	}
	return nil
}

// pgbouncerVersion returns the first line of `pgbouncer --version`.
func pgbouncerVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pgbouncerBinary, "--version").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}
