package proxy_test

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when goroutines of the proxy outlive the
// tests: every proxy a test started has been closed by then.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForProxyGoroutines(10 * time.Second); leaked != "" {
			os.Stderr.WriteString("goroutines leaked by the proxy:\n" + leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// waitForProxyGoroutines waits until no goroutine runs code of the proxy's
// packages and returns the stacks of those still running after timeout.
func waitForProxyGoroutines(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		leaked := proxyGoroutines()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func proxyGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, pkg := range []string{"sluice/core/session.", "sluice/core/pool.", "sluice/core/proxy.("} {
			if strings.Contains(g, pkg) {
				out.WriteString(g + "\n\n")
				break
			}
		}
	}
	return out.String()
}

func TestNoGoroutinesLeftAfterClose(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	for i := 0; i < 3; i++ {
		e.connect(t)
	}
	c := e.connect(t)
	tx, err := c.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	e.close() // with clients still connected, one inside a transaction
	if leaked := waitForProxyGoroutines(10 * time.Second); leaked != "" {
		t.Fatalf("goroutines left after Close:\n%s", leaked)
	}
}
