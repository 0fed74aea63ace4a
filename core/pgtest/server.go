package pgtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Host is the address every pgtest server listens on.
const Host = "127.0.0.1"

// Timeouts for the PostgreSQL programs pgtest runs.
const (
	initdbTimeout     = 2 * time.Minute
	pgctlWaitSeconds  = 60
	pgctlTimeout      = (pgctlWaitSeconds + 10) * time.Second
	killWaitTimeout   = 10 * time.Second
	portAttempts      = 3
	logTailOnFailure  = 40
	logTailReadWindow = 256 << 10
)

// Server is a running PostgreSQL server started by [Start], [StartServer] or
// [Server.AddReplica]. Its methods are safe for concurrent use. Whoever
// started it owns it and must call Stop ([Start] and [Server.AddReplica]
// arrange that through testing.TB.Cleanup).
type Server struct {
	opts    Options // with defaults applied; DataDir is empty for a temporary server
	run     *runner
	runDir  string // short temporary directory: Unix socket, and for a temporary server its data and log
	dataDir string
	logPath string
	port    int

	mu      sync.Mutex // guards the fields below
	stopped bool
	stopErr error
}

// Start starts a PostgreSQL server for the test and registers its Stop with
// tb.Cleanup, so it is stopped and its temporary directory removed however
// the test ends. It fails the test through tb.Fatalf, with the tail of the
// server log, if the server cannot be started.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := StartServer(opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return s
}

// StartServer starts a PostgreSQL server described by opts and returns once
// it accepts connections. The caller owns the server and must call
// [Server.Stop]. On failure nothing is left running and the temporary
// directory is removed; the error includes the tail of the server log.
func StartServer(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	run, err := newRunner()
	if err != nil {
		return nil, err
	}
	s, err := newServer(run, opts)
	if err != nil {
		return nil, err
	}
	reused, err := s.prepareDataDir()
	if err == nil {
		err = s.start()
	}
	if err == nil && reused {
		// The cluster may have been initialised with another password or
		// password_encryption.
		err = s.setSuperuserPassword()
	}
	if err != nil {
		return nil, s.abandon(err)
	}
	return s, nil
}

// newServer creates the server's run directory and fills in its paths.
func newServer(run *runner, opts Options) (*Server, error) {
	runDir, err := makeRunDir(run)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, run: run, runDir: runDir}
	if opts.DataDir == "" {
		s.dataDir = filepath.Join(runDir, "data")
		s.logPath = filepath.Join(runDir, "postgres.log")
	} else {
		dir, err := filepath.Abs(opts.DataDir)
		if err != nil {
			_ = os.RemoveAll(runDir)
			return nil, fmt.Errorf("pgtest: data directory %q: %w", opts.DataDir, err)
		}
		s.dataDir = dir
		s.logPath = filepath.Join(dir, "pgtest.log")
	}
	return s, nil
}

// makeRunDir creates a private directory short enough for a Unix socket path
// (at most 107 bytes) and hands it to the user that runs PostgreSQL.
func makeRunDir(run *runner) (string, error) {
	parent := os.TempDir()
	if len(parent) > 64 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "pgt")
	if err != nil {
		return "", fmt.Errorf("pgtest: creating temporary directory: %w", err)
	}
	if err := run.chown(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// prepareDataDir initialises the data directory unless it already holds a
// cluster, which it reports, and writes pg_hba.conf.
func (s *Server) prepareDataDir() (reused bool, err error) {
	if s.opts.DataDir != "" {
		if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
			reused = true
		} else if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
			return false, fmt.Errorf("pgtest: creating data directory: %w", err)
		}
		if err := s.run.checkReachable(s.dataDir); err != nil {
			return false, err
		}
		if err := s.run.chownTree(s.dataDir); err != nil {
			return false, err
		}
		if err := os.Chmod(s.dataDir, 0o700); err != nil {
			return false, fmt.Errorf("pgtest: %w", err)
		}
	}
	if !reused {
		if err := s.initdb(); err != nil {
			return false, err
		}
	}
	if err := s.includeConfig(); err != nil {
		return false, err
	}
	return reused, s.run.writeFile(filepath.Join(s.dataDir, "pg_hba.conf"), hbaConfig(s.opts.AuthMethod))
}

// initdb creates a new cluster in s.dataDir.
func (s *Server) initdb() error {
	pwfile := filepath.Join(s.runDir, "pwfile")
	if err := s.run.writeFile(pwfile, initdbPassword(s.opts)+"\n"); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	err := s.run.run(initdbTimeout, s.runDir, "initdb", []string{
		"-D", s.dataDir,
		"-U", Superuser,
		"--pwfile=" + pwfile,
		"--auth-local=trust",
		"--auth-host=" + s.opts.AuthMethod,
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	})
	if err != nil {
		return fmt.Errorf("pgtest: initialising data directory %s: %w", s.dataDir, err)
	}
	return nil
}

// includeConfig makes postgresql.conf include pgtest.conf, which start
// rewrites each time.
func (s *Server) includeConfig() error {
	path := filepath.Join(s.dataDir, "postgresql.conf")
	conf, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	const include = "include_if_exists = 'pgtest.conf'"
	if strings.Contains(string(conf), include) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by pgtest.\n%s\n", include)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// start writes pgtest.conf and starts the postmaster with pg_ctl, choosing
// another free port if the one picked is taken before the server binds it.
func (s *Server) start() error {
	attempts := 1
	if s.opts.Port == 0 {
		attempts = portAttempts
	}
	for attempt := 1; ; attempt++ {
		port := s.opts.Port
		if port == 0 {
			var err error
			if port, err = freePort(); err != nil {
				return err
			}
		}
		if err := s.writeTLSFiles(); err != nil {
			return err
		}
		conf := serverConfig(s.opts, port, s.runDir)
		if err := s.run.writeFile(filepath.Join(s.dataDir, "pgtest.conf"), conf); err != nil {
			return err
		}
		logStart := fileSize(s.logPath)
		err := s.run.run(pgctlTimeout, s.runDir, "pg_ctl", []string{
			"start", "-D", s.dataDir, "-l", s.logPath, "-w", "-t", strconv.Itoa(pgctlWaitSeconds),
		})
		if err == nil {
			s.port = port
			return nil
		}
		if attempt < attempts && s.portTaken(logStart) {
			continue
		}
		return fmt.Errorf("pgtest: starting PostgreSQL on port %d: %w", port, err)
	}
}

// writeTLSFiles writes the certificate and key of Options.TLS, if any,
// where pgtest.conf's ssl_cert_file and ssl_key_file point: into the data
// directory, owned by the user that runs PostgreSQL, with mode 0600.
func (s *Server) writeTLSFiles() error {
	if s.opts.TLS == nil {
		return nil
	}
	if err := s.run.writeFile(filepath.Join(s.dataDir, serverCertFile), string(s.opts.TLS.CertPEM)); err != nil {
		return err
	}
	return s.run.writeFile(filepath.Join(s.dataDir, serverKeyFile), string(s.opts.TLS.KeyPEM))
}

// portTaken reports whether the log written since offset says the server
// could not bind its port.
func (s *Server) portTaken(offset int64) bool {
	f, err := os.Open(s.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(f, logTailReadWindow))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "could not bind") || strings.Contains(string(b), "Address already in use")
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	return port, nil
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// abandon stops whatever was started of a server that failed to come up and
// returns cause with the tail of the server log.
func (s *Server) abandon(cause error) error {
	tail := s.LogTail(logTailOnFailure)
	if err := s.Stop(); err != nil {
		cause = errors.Join(cause, err)
	}
	if tail == "" {
		return cause
	}
	return fmt.Errorf("%w\n--- last lines of the server log ---\n%s", cause, tail)
}

// Stop stops the server (immediately for a temporary server, with a clean
// fast shutdown when Options.DataDir was given) and removes its temporary
// directory; Options.DataDir is kept. If pg_ctl cannot stop it, the
// postmaster is killed. Stop is idempotent: later calls return the first
// call's result.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.stopErr
	}
	s.stopped = true
	s.stopErr = s.stop()
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error
	if pid, ok := s.postmasterPID(); ok {
		mode := "immediate"
		if s.opts.DataDir != "" {
			mode = "fast"
		}
		err := s.run.run(pgctlTimeout, s.runDir, "pg_ctl", []string{
			"stop", "-D", s.dataDir, "-m", mode, "-w", "-t", strconv.Itoa(pgctlWaitSeconds),
		})
		if err != nil {
			if kerr := killAndWait(pid); kerr != nil {
				errs = append(errs, fmt.Errorf("pgtest: stopping server on port %d: %w; then %w", s.port, err, kerr))
			}
		}
	}
	if err := os.RemoveAll(s.runDir); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: removing %s: %w", s.runDir, err))
	}
	return errors.Join(errs...)
}

// postmasterPID reads the postmaster's process id from postmaster.pid, if
// the server is running.
func (s *Server) postmasterPID() (int, bool) {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// killAndWait kills pid with SIGKILL and waits until it is gone.
func killAndWait(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("killing postmaster %d: %w", pid, err)
	}
	deadline := time.Now().Add(killWaitTimeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("postmaster %d still running %v after SIGKILL", pid, killWaitTimeout)
}

// Addr returns the server's TCP address, "127.0.0.1:port".
func (s *Server) Addr() string {
	return net.JoinHostPort(Host, strconv.Itoa(s.port))
}

// Port returns the TCP port the server listens on at 127.0.0.1.
func (s *Server) Port() int {
	return s.port
}

// DataDir returns the server's data directory.
func (s *Server) DataDir() string {
	return s.dataDir
}

// SocketDir returns the directory holding the server's Unix socket, over
// which connections are trusted.
func (s *Server) SocketDir() string {
	return s.runDir
}

// LogPath returns the path of the server log.
func (s *Server) LogPath() string {
	return s.logPath
}

// SuperuserPassword returns the password of the superuser [Superuser].
func (s *Server) SuperuserPassword() string {
	return s.opts.SuperuserPassword
}

// ConnString returns a URL connecting to database over TCP as user with
// password, with TLS disabled, such as
// "postgres://user:pw@127.0.0.1:5432/db?sslmode=disable". Each part is
// escaped; an empty password is left out.
func (s *Server) ConnString(user, password, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		Host:     s.Addr(),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	if password == "" {
		u.User = url.User(user)
	} else {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// SuperuserConnString returns ConnString for the superuser and database.
func (s *Server) SuperuserConnString(database string) string {
	return s.ConnString(Superuser, s.opts.SuperuserPassword, database)
}

// LogTail returns the last n lines of the server log, or "" if there is no
// log yet. It reads at most the last 256 KiB.
func (s *Server) LogTail(n int) string { return TailFile(s.logPath, n) }

// TailFile returns the last n lines of the file at path, or "" if it cannot
// be read; it reads at most its last 256 KiB. Other test helpers (Consul's)
// use it for their logs.
func TailFile(path string, n int) string {
	if n <= 0 {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if size := fileSize(path); size > logTailReadWindow {
		if _, err := f.Seek(size-logTailReadWindow, io.SeekStart); err != nil {
			return ""
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, logTailReadWindow))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
