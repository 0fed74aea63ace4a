package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/pgtest"
)

func TestVersionAndCheck(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "sluice ") {
		t.Fatalf("version: %d %q %q", code, out.String(), errb.String())
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte(`pool { max_conections = 5 }`), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "--config", bad}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `"pool.max_conections"`) {
		t.Fatalf("check of a bad file: %d %q", code, errb.String())
	}
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte(configText("127.0.0.1:0", "127.0.0.1:5432", "", 5)), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "--config", good}, &out, &errb); code != 0 {
		t.Fatalf("check of a good file: %d %q", code, errb.String())
	}
}

// configText is a configuration with one listener, one writer and, unless
// admin is empty, an admin address.
func configText(listen, writer, admin string, maxConns int) string {
	return fmt.Sprintf(`
listen "main" {
  address = %q
  cluster = "main"
}
pool {
  max_connections = %d
  borrow_timeout  = "2s"
}
cluster "main" {
  writer = %q
}
auth {
  method = "md5"
  user "app" {
    password         = "env:TEST_APP_PASSWORD"
    backend_password = "env:TEST_APP_PASSWORD"
  }
}
admin {
  address = %q
}
log {
  level = "info"
  format = "json"
}
shutdown_timeout = "3s"
`, listen, maxConns, writer, admin)
}

// TestSignals runs the real binary: SIGHUP applies a new max_connections
// without dropping a connected client, a broken file is rejected on SIGHUP,
// and SIGTERM shuts down cleanly.
func TestSignals(t *testing.T) {
	pgtest.RequireBinaries(t)
	pg := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := pg.CreateRole(ctx, "app", "pw"); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	l, _ = net.Listen("tcp", "127.0.0.1:0")
	adminAddr := l.Addr().String()
	l.Close()
	cfgPath := filepath.Join(t.TempDir(), "proxy.hcl")
	os.WriteFile(cfgPath, []byte(configText(addr, pg.Addr(), adminAddr, 1)), 0o600)

	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "TEST_APP_PASSWORD=pw")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logs strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logMu.Unlock()
		}
	}()
	defer cmd.Process.Kill()
	waitLog := func(text string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			logMu.Lock()
			ok := strings.Contains(logs.String(), text)
			logMu.Unlock()
			if ok {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("log never showed %q:\n%s", text, logs.String())
	}
	waitLog("sluice serving")

	url := "postgres://app:pw@" + addr + "/postgres?sslmode=disable&default_query_exec_mode=exec"
	a, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	// With one server connection, a held transaction blocks the other client.
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("second client got a server connection beyond max_connections = 1")
	}

	// A broken file is rejected and the old configuration stays.
	os.WriteFile(cfgPath, []byte("pool { max_connections = -1 }"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog("reload rejected")

	os.WriteFile(cfgPath, []byte(configText(addr, pg.Addr(), adminAddr, 2)), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog("configuration reloaded")
	// Both reloads are counted, the one whose file did not load too.
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{`sluice_config_reloads_total{result="ok"} 1`, `sluice_config_reloads_total{result="failed"} 1`} {
		if !strings.Contains(string(metrics), line+"\n") {
			t.Errorf("/metrics after a rejected and an applied SIGHUP lacks %q", line)
		}
	}
	var n int
	if err := b.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after raising max_connections by SIGHUP: %d, %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the client in a transaction was dropped by the reload: %v", err)
	}
	if err := a.QueryRow(ctx, "SELECT 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("first client after reload: %d, %v", n, err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { <-logDone; done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sluice exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sluice did not stop within 10s of SIGTERM")
	}
}
