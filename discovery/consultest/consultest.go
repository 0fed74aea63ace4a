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
// Outside tests (`make run-consul`, `make bench-failover`), [StartAgent]
// starts the same agent from [Options]: a directory of the caller's that
// is kept, so the next start finds its catalog again, a fixed node name and
// fixed ports if wanted, and the web UI. [Agent.RegisterService],
// [Agent.DeregisterService] and [Agent.NewClient] are Register, Deregister
// and Client returning errors instead of failing a test.
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
	"slices"
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

// Ports are an agent's listening ports, all on Host: HTTP API, DNS, Serf
// LAN and WAN, server RPC and gRPC.
type Ports struct {
	HTTP, DNS, SerfLAN, SerfWAN, Server, GRPC int
}

func (p Ports) list() []int {
	return []int{p.HTTP, p.DNS, p.SerfLAN, p.SerfWAN, p.Server, p.GRPC}
}

// check reports whether p is the zero value (pick ports) or six distinct
// valid ports.
func (p Ports) check() (fixed bool, err error) {
	if p == (Ports{}) {
		return false, nil
	}
	l := p.list()
	for _, n := range l {
		if n <= 0 || n > 65535 {
			return false, fmt.Errorf("Options.Ports %v: give all six ports, each in 1-65535, or none", l)
		}
	}
	sorted := slices.Clone(l)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(l) {
		return false, fmt.Errorf("Options.Ports %v: the ports must differ", l)
	}
	return true, nil
}

// Options configures an agent started by [StartAgent].
type Options struct {
	// Dir holds the agent's data directory (Dir/data) and its output
	// (Dir/consul.log). It is created if missing and kept when the agent
	// stops, so that an agent started again on it, with the same
	// NodeName, has the same catalog and the services registered through
	// it. Required.
	Dir string
	// NodeName is the agent's node name; empty means a name unique among
	// the agents running on the machine.
	NodeName string
	// Ports are the agent's ports; the zero value picks free ones at
	// random in 20000-31999 (and others if consul cannot bind them).
	Ports Ports
	// UI serves Consul's web UI under /ui/ on the HTTP port.
	UI bool
}

// Agent is a Consul server agent started by [Start] or [StartAgent]. Its
// methods are safe for concurrent use.
type Agent struct {
	bin     string
	node    string
	dir     string // Options.Dir: t.TempDir() of the test that started it, or the caller's
	dataDir string
	logPath string
	fixed   bool // Options.Ports were given
	ui      bool

	mu    sync.Mutex // guards the fields below
	ports Ports
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
	a, err := newAgent(Options{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("consultest: %v", err)
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

// StartAgent starts a Consul server agent described by opts and waits, as
// [Start] does, until it has elected itself leader and its node is healthy.
// The caller owns the agent and must call [Agent.Stop]; Options.Dir is kept.
// On failure nothing is left running and the error includes the tail of
// the agent's log.
func StartAgent(opts Options) (*Agent, error) {
	a, err := newAgent(opts)
	if err != nil {
		return nil, fmt.Errorf("consultest: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.startLocked(true); err != nil {
		return nil, err
	}
	return a, nil
}

// newAgent checks opts and finds the binary; nothing is started.
func newAgent(opts Options) (*Agent, error) {
	if opts.Dir == "" {
		return nil, errors.New("Options.Dir is required")
	}
	fixed, err := opts.Ports.check()
	if err != nil {
		return nil, err
	}
	bin, err := findBinary()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	node := opts.NodeName
	if node == "" {
		node = fmt.Sprintf("sluice-test-%d-%d", os.Getpid(), nodeSeq.Add(1))
	}
	return &Agent{
		bin:     bin,
		node:    node,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "consul.log"),
		fixed:   fixed,
		ui:      opts.UI,
		ports:   opts.Ports,
	}, nil
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
	c, err := a.NewClient()
	if err != nil {
		tb.Fatalf("consultest: %v", err)
	}
	return c
}

// NewClient returns a Consul API client for the agent's HTTP API.
func (a *Agent) NewClient() (*api.Client, error) {
	return api.NewClient(&api.Config{Address: a.Addr(), Scheme: "http"})
}

// Register registers a service instance with the agent, with no health
// check, so the instance is passing as long as the agent's node is, and waits
// until the catalog lists it as passing (health endpoint, passing=true). meta
// and tags may be nil. It fails tb on error or after 15 seconds.
func (a *Agent) Register(tb testing.TB, id, service, addr string, port int, tags []string, meta map[string]string) {
	tb.Helper()
	if err := a.RegisterService(id, service, addr, port, tags, meta); err != nil {
		tb.Fatalf("%v", err)
	}
}

// RegisterService is [Agent.Register] returning an error, which includes
// the tail of the agent's log, instead of failing a test. Registering an id
// again replaces the instance.
func (a *Agent) RegisterService(id, service, addr string, port int, tags []string, meta map[string]string) error {
	c, err := a.NewClient()
	if err != nil {
		return fmt.Errorf("consultest: %w", err)
	}
	reg := &api.AgentServiceRegistration{
		ID:      id,
		Name:    service,
		Address: addr,
		Port:    port,
		Tags:    tags,
		Meta:    meta,
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		return fmt.Errorf("consultest: registering %s (%s): %w\n%s", id, service, err, a.logTailSection())
	}
	if err := a.waitCatalog(c, service, id, true); err != nil {
		return fmt.Errorf("consultest: registered %s (%s): %w\n%s", id, service, err, a.logTailSection())
	}
	return nil
}

// Deregister removes the service instance id registered with the agent and
// waits until the catalog no longer lists it. It fails tb on error or after
// 15 seconds.
func (a *Agent) Deregister(tb testing.TB, id string) {
	tb.Helper()
	if err := a.DeregisterService(id); err != nil {
		tb.Fatalf("%v", err)
	}
}

// DeregisterService is [Agent.Deregister] returning an error instead of
// failing a test.
func (a *Agent) DeregisterService(id string) error {
	c, err := a.NewClient()
	if err != nil {
		return fmt.Errorf("consultest: %w", err)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		return fmt.Errorf("consultest: deregistering %s: listing services: %w\n%s", id, err, a.logTailSection())
	}
	svc, ok := svcs[id]
	if !ok {
		return fmt.Errorf("consultest: deregistering %s: no such service on agent %s", id, a.node)
	}
	if err := c.Agent().ServiceDeregister(id); err != nil {
		return fmt.Errorf("consultest: deregistering %s: %w\n%s", id, err, a.logTailSection())
	}
	if err := a.waitCatalog(c, svc.Service, id, false); err != nil {
		return fmt.Errorf("consultest: deregistered %s: %w\n%s", id, err, a.logTailSection())
	}
	return nil
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

// startLocked starts the agent and waits until it is ready. With fresh set
// and no fixed ports it picks new ports, and picks others again if consul
// could not bind them; otherwise it uses a.ports. On failure nothing is left
// running.
func (a *Agent) startLocked(fresh bool) error {
	pick := fresh && !a.fixed
	attempts := 1
	if pick {
		attempts = startAttempts
	}
	for attempt := 1; ; attempt++ {
		if pick {
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
		"-ui=" + strconv.FormatBool(a.ui),
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
func pickPorts() (Ports, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	var got []int
	for tries := 0; len(got) < 6; tries++ {
		if tries >= 1000 {
			return Ports{}, fmt.Errorf("found only %d free ports in %d-%d after %d tries", len(got), portMin, portMax-1, tries)
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
	return Ports{HTTP: got[0], DNS: got[1], SerfLAN: got[2], SerfWAN: got[3], Server: got[4], GRPC: got[5]}, nil
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
