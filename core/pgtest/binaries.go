package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BinDirEnv names the environment variable that, when set, is the directory
// holding the PostgreSQL server binaries (initdb, pg_ctl, postgres,
// pg_basebackup).
const BinDirEnv = "PGTEST_BINDIR"

// fallbackBinDir is where Debian's postgresql-15 package installs the server
// binaries.
const fallbackBinDir = "/usr/lib/postgresql/15/bin"

// ErrBinariesNotFound is returned (wrapped) when no directory holding initdb
// can be found.
var ErrBinariesNotFound = errors.New("PostgreSQL 15 binaries not found; run `make deps`")

// RequireBinaries fails the test, with a message saying how to install them,
// if the PostgreSQL server binaries cannot be found. It fails rather than
// skips: a skipped integration test proves nothing in CI. [Start] performs
// the same check, so calling RequireBinaries first is only needed to fail
// early.
func RequireBinaries(tb testing.TB) {
	tb.Helper()
	if _, err := findBinDir(); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
}

// findBinDir returns the directory holding initdb: $PGTEST_BINDIR if set,
// else `pg_config --bindir`, else the Debian PostgreSQL 15 location.
func findBinDir() (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if !hasInitdb(dir) {
			return "", fmt.Errorf("%w (no initdb in %s=%s)", ErrBinariesNotFound, BinDirEnv, dir)
		}
		return dir, nil
	}
	if path, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, "--bindir").Output()
		if dir := strings.TrimSpace(string(out)); err == nil && hasInitdb(dir) {
			return dir, nil
		}
	}
	if hasInitdb(fallbackBinDir) {
		return fallbackBinDir, nil
	}
	return "", fmt.Errorf("%w (looked in $%s, `pg_config --bindir` and %s)", ErrBinariesNotFound, BinDirEnv, fallbackBinDir)
}

func hasInitdb(dir string) bool {
	info, err := os.Stat(filepath.Join(dir, "initdb"))
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// runner runs PostgreSQL programs, as an unprivileged user when the process
// is root. It is immutable once built and safe for concurrent use.
type runner struct {
	binDir string
	// cred is nil when the programs run as the calling user.
	cred *syscall.Credential
	// userName names the user the programs run as, for error messages.
	userName string
}

// newRunner finds the binaries and decides which user runs them.
func newRunner() (*runner, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	r := &runner{binDir: binDir}
	if os.Geteuid() != 0 {
		if u, err := user.Current(); err == nil {
			r.userName = u.Username
		}
		return r, nil
	}
	var lookupErrs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			lookupErrs = append(lookupErrs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("pgtest: parsing ids of user %q: %w", name, err)
		}
		r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		r.userName = name
		return r, nil
	}
	return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to; found no unprivileged user to run it as: %w",
		errors.Join(lookupErrs...))
}

// command builds a command running the named PostgreSQL program in dir with
// a clean environment: PG* variables of the calling process are dropped so
// they cannot redirect the program, and extraEnv is added.
func (r *runner) command(ctx context.Context, dir, program string, args []string, extraEnv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, program), args...)
	cmd.Dir = dir
	env := []string{"HOME=" + dir, "LC_ALL=C"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, extraEnv...)
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs program to completion, bounded by timeout, and returns an error
// holding its output if it fails.
func (r *runner) run(timeout time.Duration, dir, program string, args []string, extraEnv ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := r.command(ctx, dir, program, args, extraEnv...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out after %v)", err, timeout)
		}
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			return fmt.Errorf("%s: %w", program, err)
		}
		return fmt.Errorf("%s: %w: %s", program, err, msg)
	}
	return nil
}

// chown hands path to the user the programs run as; it does nothing when
// they run as the calling user.
func (r *runner) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
		return fmt.Errorf("pgtest: handing %s to user %s: %w", path, r.userName, err)
	}
	return nil
}

// chownTree hands path and everything under it to the user the programs run
// as, unless path already belongs to that user.
func (r *runner) chownTree(path string) error {
	if r.cred == nil {
		return nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == r.cred.Uid && st.Gid == r.cred.Gid {
		return nil
	}
	return filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		return r.chown(p)
	})
}

// writeFile writes a file the programs can read and write.
func (r *runner) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return r.chown(path)
}

// checkReachable reports a clear error when, running as root, the
// unprivileged user could not reach dir because an ancestor directory is not
// searchable by it.
func (r *runner) checkReachable(dir string) error {
	if r.cred == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		mode := info.Mode().Perm()
		searchable := !ok || mode&0o001 != 0 ||
			(st.Uid == r.cred.Uid && mode&0o100 != 0) ||
			(st.Gid == r.cred.Gid && mode&0o010 != 0)
		if !searchable {
			return fmt.Errorf("pgtest: data directory %s is unreachable for user %s, which runs PostgreSQL because this process is root: %s has mode %v (make it searchable, e.g. chmod o+x)",
				dir, r.userName, p, mode)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
