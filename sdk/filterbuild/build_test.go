package filterbuild

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// module writes a Go module holding one main package with source src.
func module(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range map[string]string{"go.mod": "module example.com/f\n\ngo 1.24\n", "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildWritesAWasmModule(t *testing.T) {
	dir := module(t, "package main\n\nfunc main() {}\n")
	out := filepath.Join(t.TempDir(), "f.wasm")
	if err := Build(dir, out); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.HasPrefix(b, []byte("\x00asm")) {
		t.Fatalf("%s is not a WebAssembly module (%v)", out, err)
	}
}

func TestBuildErrorHoldsTheCompilerOutput(t *testing.T) {
	dir := module(t, "package main\n\nfunc main() {\n")
	err := Build(dir, filepath.Join(t.TempDir(), "f.wasm"))
	var be *Error
	if !errors.As(err, &be) {
		t.Fatalf("Build of a syntax error: %v, want an *Error", err)
	}
	if out := string(be.Output); !strings.Contains(out, "main.go:4") || !strings.Contains(out, "syntax error") {
		t.Errorf("the error's output lacks the compiler's message:\n%s", out)
	}
}

func TestCachedReusesABuild(t *testing.T) {
	dir := module(t, "package main\n\nfunc main() {}\n")
	cache := t.TempDir()
	first, err := Cached(dir, cache)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Cached(dir, cache)
	if err != nil || again != first {
		t.Fatalf("second build: %q, %v; want %q", again, err, first)
	}
	if fi2, _ := os.Stat(again); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("the second build rewrote the cached file")
	}
	// A change to the sources is a new build.
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println() }\n"), 0o600)
	if changed, err := Cached(dir, cache); err != nil || changed == first {
		t.Fatalf("build after a change: %q, %v; want a path other than %q", changed, err, first)
	}
}
