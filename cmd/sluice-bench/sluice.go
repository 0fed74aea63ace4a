package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicedb/sluice/core/config"
)

// buildTimeout bounds `go build ./cmd/sluice`.
const buildTimeout = 5 * time.Minute

// sluiceSetup describes the Sluice the harness runs.
type sluiceSetup struct {
	name     string // the target's name, for its process and log
	dir      string // private directory for its binary, config and log
	binary   string // the sluice executable
	port     int
	pgAddr   string
	poolSize int
	// engine is the engine key of proxy.hcl: config.EngineLoop or
	// config.EngineGoroutine; "" leaves the key out (Sluice's default).
	engine string
	// replicas, when set, are the cluster's replicas, and the listener
	// is a reader: pgbench's transactions go to them (pools of poolSize
	// each).
	replicas []string
	// adminPort, when set, is the port of its admin listener, with Go's
	// profiles on (admin.pprof): the idle stage reads its heap there.
	adminPort int
	// filterModule, when set, is the readwrite filter's .wasm: every
	// statement goes through it (filter "readwrite", default timeout and
	// failure policy), and the cluster's reader_fallback is "writer".
	filterModule string
	// certFile and keyFile, when set, are the listener's tls block, and
	// it requires TLS (require_tls); the cluster's connections to the
	// server keep the default (tls.mode "prefer": plaintext against the
	// harness's server, which has no TLS).
	certFile, keyFile string
}

// configHCL renders proxy.hcl: one listener in front of the server,
// transaction pooling with the given pool size and md5 authentication of the
// bench user, mirroring the PgBouncer setup.
func (s sluiceSetup) configHCL() string {
	listenExtra, replicas, fallback, filter, engine := "", "", "", "", ""
	if s.certFile != "" {
		listenExtra = fmt.Sprintf("\n  require_tls = true\n  tls {\n    cert_file = %q\n    key_file  = %q\n  }", s.certFile, s.keyFile)
	}
	if s.adminPort != 0 {
		engine = fmt.Sprintf("admin {\n  address = \"%s:%d\"\n  pprof   = true\n}\n", loopback, s.adminPort)
	}
	if s.engine != "" {
		engine += fmt.Sprintf("engine           = %q\n", s.engine)
	}
	if len(s.replicas) > 0 {
		listenExtra += "\n  role    = \"reader\""
		quoted := make([]string, len(s.replicas))
		for i, r := range s.replicas {
			quoted[i] = strconv.Quote(r)
		}
		replicas = "\n  replicas = [" + strings.Join(quoted, ", ") + "]"
	}
	if s.filterModule != "" {
		// The filter's replica decisions find no replica: say where they
		// go rather than rely on the default.
		fallback = "\n  reader_fallback = \"writer\""
		filter = fmt.Sprintf("\nfilter \"readwrite\" {\n  module = %q\n}\n", s.filterModule)
	}
	return fmt.Sprintf(`listen "main" {
  address = "%s:%d"
  cluster = "main"%s
}

pool {
  mode            = "transaction"
  max_connections = %d
  borrow_timeout  = "120s"
}

cluster "main" {
  writer = %q%s%s
}

auth {
  method = "md5"
  user %q {
    password         = %q
    backend_user     = %q
    backend_password = %q
  }
}

log {
  level = "warn"
}

shutdown_timeout = "0s"
%s%s`, loopback, s.port, listenExtra, s.poolSize, s.pgAddr, replicas, fallback, benchUser, benchPassword, benchUser, benchPassword, engine, filter)
}

// start validates and writes proxy.hcl and runs `sluice run` as a separate
// process, so that its CPU time and memory can be read from /proc.
func (s sluiceSetup) start(context.Context) (*child, error) {
	hcl := s.configHCL()
	if _, err := config.Parse([]byte(hcl), nil); err != nil {
		return nil, fmt.Errorf("the generated proxy.hcl is invalid: %w", err)
	}
	path := filepath.Join(s.dir, "proxy.hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(s.binary, "run", "--config", path)
	cmd.Dir = s.dir
	// Keep SLUICE_* overrides in the harness's environment from changing
	// the configuration being measured.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return startChild(s.name, cmd, filepath.Join(s.dir, s.name+".log"))
}

// buildSluice compiles ./cmd/sluice of the module containing the working
// directory into out and returns the module's root directory.
func buildSluice(ctx context.Context, out string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/sluice")
	cmd.Dir = root
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return root, fmt.Errorf("go build ./cmd/sluice: %w\n%s", err, strings.TrimSpace(output.String()))
	}
	return root, nil
}

// moduleRoot returns the root directory of the module containing the
// working directory.
func moduleRoot(ctx context.Context) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the Sluice module: run from the repository, or pass -sluice-bin")
	}
	return filepath.Dir(mod), nil
}

// sourceRevision describes the commit the module root is at, with
// "+uncommitted changes" when the working tree differs from it; "" if git
// cannot tell.
func sourceRevision(ctx context.Context, root string) string {
	if root == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rev, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	desc := strings.TrimSpace(string(rev))
	status, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=normal").Output()
	if err == nil && len(bytes.TrimSpace(status)) > 0 {
		desc += " + uncommitted changes"
	}
	return desc
}
