package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopTimeout is how long a proxy gets to exit after SIGTERM before it is
// killed.
const stopTimeout = 10 * time.Second

// child is a long-running process (a proxy) that the harness started and
// owns: the harness must call stop. Its output goes to a log file. It is safe
// for concurrent use.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has been waited for
	waitErr error         // Wait's result; read only after done is closed
}

// startChild starts cmd with its output appended to logPath. The process
// gets its own process group, so a Ctrl-C in the terminal reaches only the
// harness, which then stops it in order; and it is killed if the harness
// dies without stopping it.
func startChild(name string, cmd *exec.Cmd, logPath string) (*child, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	detach(cmd)
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		out.Close()
		close(c.done)
	}()
	return c, nil
}

// detach puts cmd in its own process group and asks the kernel to kill it
// when the harness dies, keeping any credential already set.
func detach(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// pid returns the process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended, and if so how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		if c.waitErr == nil {
			return true, errors.New("exited with status 0")
		}
		return true, c.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to stopTimeout, then kills the process. It
// may be called more than once.
func (c *child) stop() {
	if done, _ := c.exited(); done {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(stopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// logTail returns the last n lines of the process's output.
func (c *child) logTail(n int) string {
	return fileTail(c.logPath, n)
}

// logSize returns the current size of the process's log.
func (c *child) logSize() int64 {
	info, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return info.Size()
}

// maxLoggedLines and maxLoggedLineLen bound what logSince returns.
const (
	maxLoggedLines   = 10
	maxLoggedLineLen = 400
)

// logSince returns what the process logged after its log had size offset:
// its distinct lines, at most maxLoggedLines of them, each cut to
// maxLoggedLineLen bytes.
func (c *child) logSince(offset int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return ""
	}
	seen := map[string]bool{}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key := logLineKey(line)
		if line == "" || seen[key] {
			continue
		}
		seen[key] = true
		if len(line) > maxLoggedLineLen {
			line = line[:maxLoggedLineLen] + "..."
		}
		lines = append(lines, line)
	}
	if len(lines) > maxLoggedLines {
		lines = append(lines[:maxLoggedLines], fmt.Sprintf("(%d more distinct lines in %s)", len(lines)-maxLoggedLines, c.logPath))
	}
	return strings.Join(lines, "\n")
}

// countSince returns how many lines the process logged after its log had
// size offset contain substr, and the first of them (cut to
// maxLoggedLineLen bytes).
func (c *child) countSince(offset int64, substr string) (n int, first string) {
	f, err := os.Open(c.logPath)
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return 0, ""
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, substr) {
			continue
		}
		if n++; n == 1 {
			first = strings.TrimSpace(line)
			if len(first) > maxLoggedLineLen {
				first = first[:maxLoggedLineLen] + "..."
			}
		}
	}
	return n, first
}

// logVarying matches the parts of a log line that differ between otherwise
// identical events: timestamps, numbers such as session ids and ports.
var logVarying = regexp.MustCompile(`"ts":[0-9.e+]+,?|[0-9]+`)

// logLineKey is what logSince compares to drop repeated events.
func logLineKey(line string) string {
	return logVarying.ReplaceAllString(line, "#")
}

// cpuTicks returns the user plus system CPU time the process has used, in
// clock ticks, from /proc/<pid>/stat (fields 14 and 15, summed over all
// threads).
func (c *child) cpuTicks() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid()))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU extracts utime+stime from the text of /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3 (state), so field 14 (utime) is fields[11].
	if len(fields) < 13 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return utime + stime, nil
}

// memory returns the resident set size and its peak (VmRSS and VmHWM) in
// KiB from /proc/<pid>/status.
func (c *child) memory() (rssKiB, peakKiB int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid()))
	if err != nil {
		return 0, 0, err
	}
	return parseStatusMemory(b)
}

// parseStatusMemory extracts VmRSS and VmHWM in KiB from the text of
// /proc/<pid>/status.
func parseStatusMemory(status []byte) (rssKiB, peakKiB int64, err error) {
	var haveRSS bool
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("malformed %s line %q", name, sc.Text())
		}
		if name == "VmRSS" {
			rssKiB, haveRSS = n, true
		} else {
			peakKiB = n
		}
	}
	if !haveRSS {
		return 0, 0, errors.New("no VmRSS line in /proc status")
	}
	return rssKiB, peakKiB, nil
}

// fileTail returns the last n lines of the file at path, reading at most its
// last 64 KiB; "" if it cannot be read.
func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 64 << 10
	if info, err := f.Stat(); err == nil && info.Size() > window {
		_, _ = f.Seek(info.Size()-window, 0)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(f)
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// unprivilegedCredential returns the credential of the "postgres" (else
// "nobody") user when the harness runs as root, for programs that refuse to
// run as root; nil when the harness is not root.
func unprivilegedCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("ids of user %q: %w", name, err)
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("running as root and found no unprivileged user: %w", errors.Join(errs...))
}

// raiseFileLimit raises the soft open-file limit to the hard limit (at most
// 1<<16) and returns the new soft limit. Children inherit it: that is what
// lets PgBouncer and pgbench hold a thousand sockets. Calling Setrlimit
// explicitly also stops the Go runtime from restoring the original limit in
// children.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	want := min(lim.Max, 1<<16)
	if lim.Cur < want {
		lim.Cur = want
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return lim.Cur, fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	return lim.Cur, nil
}
