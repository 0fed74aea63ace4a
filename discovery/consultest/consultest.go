// Package consultest starts a real Consul agent for tests.
//
// The agent is bin/consul, Consul v1.14.11 (the last MPL-2.0 release) built
// from source by `make deps` from the tools module in discovery/consul/agent.
// $SLUICE_CONSUL_BIN overrides that path. A test whose binary is missing
// fails, with a message saying to run `make deps`; it is never skipped, so CI
// cannot pass without having run the Consul tests.
//
// Each [Agent] is a single-node Consul cluster of its own on 127.0.0.1:
//
//	-server -bootstrap-expect=1 -ui=false -bind 127.0.0.1 -client 127.0.0.1
//
// with a data directory under t.TempDir(), a unique node name and all six
// ports (HTTP, DNS, Serf LAN and WAN, server RPC, gRPC; gRPC-TLS and HTTPS
// are off) picked at random in 20000-31999, below this machine's ephemeral
// range (32768-60999), and checked free for TCP and UDP. Many agents can run
// at once, in one test binary and across the binaries of `go test ./...`.
//
// Server mode, not -dev, is deliberate: dev mode keeps everything in memory,
// so a restarted dev agent has forgotten every registration. A server agent
// keeps its Raft log, its catalog and the services registered through it in
// the data directory, so [Agent.Restart] brings back the same cluster, on the
// same ports, with the same services. Raft timing is set to its fastest
// (performance.raft_multiplier = 1): a fresh agent elects itself leader in
// about two seconds, a restarted one in about one. SIGTERM does not make the
// server leave the cluster (leave_on_terminate = false), which would empty
// the single-node Raft configuration and leave it unable to elect a leader
// after a restart.
//
// The agent's output goes to consul.log in t.TempDir(); failures include its
// last lines. The agent is stopped when the test ends, and is killed if the
// test binary dies (Linux).
//
// A typical test:
//
//	agent := consultest.Start(t)
//	agent.Register(t, "pg-1", "pg", "127.0.0.1", 5432, []string{"primary"}, nil)
//	entries, _, err := agent.Client(t).Health().Service("pg", "", true, nil)
//	// ...
//	agent.Stop()      // Consul is down
//	agent.Restart(t)  // and back, still knowing "pg-1"
//
// The api clients this package makes take no settings from CONSUL_*
// environment variables except CONSUL_NAMESPACE and CONSUL_PARTITION, which
// the Consul API library always reads: leave those unset (they are Consul
// Enterprise features this agent rejects).
package consultest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluicedb/sluice/core/pgtest"
)

// BinEnv names the environment variable that, when set, is the path of the
// consul binary to run instead of <repository root>/bin/consul.
const BinEnv = "SLUICE_CONSUL_BIN"

// Host is the loopback address every agent binds and serves on.
const Host = "127.0.0.1"

// modulePath is the main module's path, whose go.mod marks the repository
// root that holds bin/consul.
const modulePath = "github.com/sluicedb/sluice"

// Ports are picked in [portMin, portMax), below the ephemeral port range
// (32768-60999), so outgoing connections of other processes do not take them
// between a Stop and a Restart.
const (
	portMin = 20000
	portMax = 32000
)

const (
	startTimeout      = 30 * time.Second
	registerTimeout   = 15 * time.Second
	stopTimeout       = 10 * time.Second
	killTimeout       = 10 * time.Second
	pollInterval      = 50 * time.Millisecond
	requestTimeout    = 2 * time.Second
	startAttempts     = 3
	logTailOnFailure  = 40
	logTailReadWindow = 256 << 10
)

// nodeSeq makes node names unique within a test binary; the process id makes
// them unique across binaries.
var nodeSeq atomic.Int64

// ports are the agent's listening ports, all on Host.
type ports struct {
	HTTP, DNS, SerfLAN, SerfWAN, Server, GRPC int
}

func (p ports) list() []int {
	return []int{p.HTTP, p.DNS, p.SerfLAN, p.SerfWAN, p.Server, p.GRPC}
}

// Agent is a Consul server agent started by [Start]. Its methods are safe for
// concurrent use.
type Agent struct {
	bin     string
	node    string
	dir     string // t.TempDir() of the test that started it
	dataDir string
	logPath string

	mu    sync.Mutex // guards the fields below
	ports ports
	proc  *process // nil when stopped
}

// process is one run of the consul binary.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start starts a Consul server agent for the test, waits until it has elected
// itself leader and its node is healthy in the catalog, and registers its
// Stop with tb.Cleanup. It fails the test, with the tail of the agent's log,
// if the binary is missing or the agent does not come up within 30 seconds.
func Start(tb testing.TB) *Agent {
	tb.Helper()
	bin, err := findBinary()
	if err != nil {
		tb.Fatalf("consultest: %v", err)
	}
	dir := tb.TempDir()
	a := &Agent{
		bin:     bin,
		node:    fmt.Sprintf("sluice-test-%d-%d", os.Getpid(), nodeSeq.Add(1)),
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "consul.log"),
	}
	// Registered after TempDir, so it runs before the directory is removed.
	tb.Cleanup(a.Stop)
	began := time.Now()
	a.mu.Lock()
	err = a.startLocked(true)
	a.mu.Unlock()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Logf("consultest: agent %s serving HTTP on %s, leader after %v", a.node, a.Addr(), time.Since(began).Round(time.Millisecond))
	return a
}

// Restart starts the agent again, on the same ports with the same node name
// and data directory, after stopping it if it is running, and waits as
// [Start] does. Registrations made before survive. It fails tb if the agent
// does not come back, for example because another process took one of its
// ports meanwhile.
func (a *Agent) Restart(tb testing.TB) {
	tb.Helper()
	a.Stop()
	began := time.Now()
	a.mu.Lock()
	err := a.startLocked(false)
	a.mu.Unlock()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Logf("consultest: agent %s restarted, leader after %v", a.node, time.Since(began).Round(time.Millisecond))
}

// Stop stops the agent: SIGTERM, then SIGKILL if it has not exited within 10
// seconds, and waits for it to exit. The data directory is kept for
// [Agent.Restart]. Stopping a stopped agent does nothing.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopLocked()
}

func (a *Agent) stopLocked() {
	p := a.proc
	if p == nil {
		return
	}
	a.proc = nil
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		// Nothing more can be done; the kernel will reap it eventually.
	}
}

// Addr returns the host:port of the agent's HTTP API, such as
// "127.0.0.1:24817".
func (a *Agent) Addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return net.JoinHostPort(Host, strconv.Itoa(a.ports.HTTP))
}

// NodeName returns the agent's node name, unique among the agents of all
// running tests.
func (a *Agent) NodeName() string { return a.node }

// LogPath returns the path of the file holding the agent's output, across
// restarts.
func (a *Agent) LogPath() string { return a.logPath }

// Client returns a Consul API client for the agent's HTTP API. It fails tb if
// the client cannot be made.
func (a *Agent) Client(tb testing.TB) *api.Client {
	tb.Helper()
	c, err := a.newClient()
	if err != nil {
		tb.Fatalf("consultest: %v", err)
	}
	return c
}

func (a *Agent) newClient() (*api.Client, error) {
	return api.NewClient(&api.Config{Address: a.Addr(), Scheme: "http"})
}

// Register registers a service instance with the agent, with no health
// check, so the instance is passing as long as the agent's node is, and waits
// until the catalog lists it as passing (health endpoint, passing=true). meta
// and tags may be nil. It fails tb on error or after 15 seconds.
func (a *Agent) Register(tb testing.TB, id, service, addr string, port int, tags []string, meta map[string]string) {
	tb.Helper()
	c := a.Client(tb)
	reg := &api.AgentServiceRegistration{
		ID:      id,
		Name:    service,
		Address: addr,
		Port:    port,
		Tags:    tags,
		Meta:    meta,
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		tb.Fatalf("consultest: registering %s (%s): %v\n%s", id, service, err, a.logTailSection())
	}
	if err := a.waitCatalog(c, service, id, true); err != nil {
		tb.Fatalf("consultest: registered %s (%s): %v\n%s", id, service, err, a.logTailSection())
	}
}

// Deregister removes the service instance id registered with the agent and
// waits until the catalog no longer lists it. It fails tb on error or after
// 15 seconds.
func (a *Agent) Deregister(tb testing.TB, id string) {
	tb.Helper()
	c := a.Client(tb)
	svcs, err := c.Agent().Services()
	if err != nil {
		tb.Fatalf("consultest: deregistering %s: listing services: %v\n%s", id, err, a.logTailSection())
	}
	svc, ok := svcs[id]
	if !ok {
		tb.Fatalf("consultest: deregistering %s: no such service on agent %s", id, a.node)
	}
	if err := c.Agent().ServiceDeregister(id); err != nil {
		tb.Fatalf("consultest: deregistering %s: %v\n%s", id, err, a.logTailSection())
	}
	if err := a.waitCatalog(c, svc.Service, id, false); err != nil {
		tb.Fatalf("consultest: deregistered %s: %v\n%s", id, err, a.logTailSection())
	}
}

// waitCatalog waits until the health endpoint, passing=true, lists instance
// id of service (present) or does not (!present).
func (a *Agent) waitCatalog(c *api.Client, service, id string, present bool) error {
	deadline := time.Now().Add(registerTimeout)
	var lastErr error
	for {
		entries, _, err := c.Health().Service(service, "", true, nil)
		if err == nil {
			found := false
			for _, e := range entries {
				if e.Service != nil && e.Service.ID == id {
					found = true
				}
			}
			if found == present {
				return nil
			}
			lastErr = nil
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			want := "listed"
			if !present {
				want = "gone"
			}
			if lastErr != nil {
				return fmt.Errorf("not %s as passing in the catalog after %v: %w", want, registerTimeout, lastErr)
			}
			return fmt.Errorf("not %s as passing in the catalog after %v", want, registerTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// startLocked starts the agent and waits until it is ready. With fresh set it
// picks new ports, and picks others again if consul could not bind them;
// otherwise it reuses a.ports. On failure nothing is left running.
func (a *Agent) startLocked(fresh bool) error {
	attempts := 1
	if fresh {
		attempts = startAttempts
	}
	for attempt := 1; ; attempt++ {
		if fresh {
			p, err := pickPorts()
			if err != nil {
				return fmt.Errorf("consultest: %w", err)
			}
			a.ports = p
		}
		logStart := fileSize(a.logPath)
		err := a.spawnLocked()
		if err == nil {
			err = a.waitReadyLocked()
		}
		if err == nil {
			return nil
		}
		tail := a.logTailSection()
		a.stopLocked()
		if attempt < attempts && a.bindFailedSince(logStart) {
			continue
		}
		return fmt.Errorf("consultest: starting Consul agent %s (%s) on ports %v: %w\n%s",
			a.node, a.bin, a.ports.list(), err, tail)
	}
}

// args returns the consul command line.
func (a *Agent) args() []string {
	p := a.ports
	return []string{
		"agent",
		"-server",
		"-bootstrap-expect=1",
		"-ui=false",
		"-node=" + a.node,
		"-data-dir=" + a.dataDir,
		"-bind=" + Host,
		"-client=" + Host,
		"-http-port=" + strconv.Itoa(p.HTTP),
		"-dns-port=" + strconv.Itoa(p.DNS),
		"-serf-lan-port=" + strconv.Itoa(p.SerfLAN),
		"-serf-wan-port=" + strconv.Itoa(p.SerfWAN),
		"-server-port=" + strconv.Itoa(p.Server),
		"-grpc-port=" + strconv.Itoa(p.GRPC),
		"-hcl=ports { grpc_tls = -1, https = -1 }",
		"-hcl=performance { raft_multiplier = 1 }",
		"-hcl=leave_on_terminate = false",
		"-hcl=skip_leave_on_interrupt = true",
		"-hcl=disable_update_check = true",
		"-log-level=info",
	}
}

// spawnLocked starts the consul process, its output appended to the log.
func (a *Agent) spawnLocked() error {
	if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(a.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// The child holds its own copy of the descriptor.
	defer logf.Close()
	args := a.args()
	fmt.Fprintf(logf, "=== consultest %s: %s %s\n", time.Now().Format(time.RFC3339Nano), a.bin, strings.Join(args, " "))
	cmd := exec.Command(a.bin, args...)
	cmd.Dir = a.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	a.proc = p
	return nil
}

// waitReadyLocked waits until the agent reports a Raft leader and its own
// node is in the catalog with a passing serfHealth check, so that services
// registered from then on are passing at once.
func (a *Agent) waitReadyLocked() error {
	// A client of its own: bounded requests, and no idle connections left
	// in a shared pool when the agent stops.
	transport := &http.Transport{DisableKeepAlives: true}
	defer transport.CloseIdleConnections()
	c, err := api.NewClient(&api.Config{
		Address:    net.JoinHostPort(Host, strconv.Itoa(a.ports.HTTP)),
		Scheme:     "http",
		HttpClient: &http.Client{Transport: transport, Timeout: requestTimeout},
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(startTimeout)
	stage := "no answer from the HTTP API"
	var lastErr error
	for {
		if a.proc.exited() {
			return fmt.Errorf("consul exited before it was ready (%s): %v", stage, a.proc.err)
		}
		leader, err := c.Status().Leader()
		switch {
		case err != nil:
			lastErr = err
		case leader == "":
			stage, lastErr = "no leader elected", nil
		default:
			stage = "leader " + leader + ", node " + a.node + " not healthy in the catalog"
			checks, _, err := c.Health().Node(a.node, nil)
			lastErr = err
			for _, ch := range checks {
				if ch.CheckID == "serfHealth" && ch.Status == api.HealthPassing {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("not ready after %v (%s): %w", startTimeout, stage, lastErr)
			}
			return fmt.Errorf("not ready after %v (%s)", startTimeout, stage)
		}
		time.Sleep(pollInterval)
	}
}

// bindFailedSince reports whether the log written since offset says consul
// could not listen on one of its ports.
func (a *Agent) bindFailedSince(offset int64) bool {
	f, err := os.Open(a.logPath)
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
	return bytes.Contains(b, []byte("address already in use"))
}

// LogTail returns the last n lines of the agent's output, or "" if there is
// none yet. It reads at most the last 256 KiB.
func (a *Agent) LogTail(n int) string { return pgtest.TailFile(a.logPath, n) }

func (a *Agent) logTailSection() string {
	tail := a.LogTail(logTailOnFailure)
	if tail == "" {
		return "(the Consul agent wrote no output to " + a.logPath + ")"
	}
	return "--- last lines of " + a.logPath + " ---\n" + tail
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// pickPorts picks six distinct random ports in [portMin, portMax) that are
// free on Host for both TCP and UDP (DNS and Serf use both). They are held
// until all six are found, then released for consul to bind.
func pickPorts() (ports, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	var got []int
	for tries := 0; len(got) < 6; tries++ {
		if tries >= 1000 {
			return ports{}, fmt.Errorf("found only %d free ports in %d-%d after %d tries", len(got), portMin, portMax-1, tries)
		}
		port := portMin + rand.IntN(portMax-portMin)
		addr := net.JoinHostPort(Host, strconv.Itoa(port))
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken, or picked already
		}
		ul, err := net.ListenPacket("udp", addr)
		if err != nil {
			_ = tl.Close()
			continue
		}
		held = append(held, tl, ul)
		got = append(got, port)
	}
	return ports{HTTP: got[0], DNS: got[1], SerfLAN: got[2], SerfWAN: got[3], Server: got[4], GRPC: got[5]}, nil
}

// ErrBinaryNotFound is returned (wrapped) when no consul binary can be found.
var ErrBinaryNotFound = errors.New("Consul agent binary not found; run `make deps` (it builds bin/consul, Consul v1.14.11, from discovery/consul/agent)")

// findBinary returns $SLUICE_CONSUL_BIN if set, else bin/consul in the root
// of the repository, found by walking up from the working directory to the
// go.mod of module github.com/sluicedb/sluice.
func findBinary() (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		if !isExecutable(bin) {
			return "", fmt.Errorf("%w (%s=%s is not an executable file)", ErrBinaryNotFound, BinEnv, bin)
		}
		return bin, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%w (%v)", ErrBinaryNotFound, err)
	}
	bin := filepath.Join(root, "bin", "consul")
	if !isExecutable(bin) {
		return "", fmt.Errorf("%w (no executable %s; $%s is not set)", ErrBinaryNotFound, bin, BinEnv)
	}
	return bin, nil
}

// repoRoot walks up from the working directory to the directory whose go.mod
// declares the main module, skipping nested modules such as the Consul tools
// module.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declaresModule(b, modulePath) {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("no go.mod of module %s in %s or above", modulePath, wd)
		}
	}
}

// declaresModule reports whether go.mod content declares module path.
func declaresModule(gomod []byte, path string) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == path {
			return true
		}
	}
	return false
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}
