// Package filterbuild compiles a Go filter to a Sluice WebAssembly module
// with the stock toolchain: GOOS=wasip1 GOARCH=wasm go build
// -buildmode=c-shared. It is what `sluice filter build` and
// sdk/filtertest run; it does not import package testing.
package filterbuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// Error is the error of a go build that failed: Output is what the
// compiler printed, verbatim, for the user to read.
type Error struct {
	Dir    string // the filter's directory
	Err    error  // how go build ended, such as "exit status 1"
	Output []byte // what go build printed
}

// Error returns the directory, how go build ended, and its output.
func (e *Error) Error() string {
	return fmt.Sprintf("building %s: %v\n%s", e.Dir, e.Err, e.Output)
}

// Unwrap returns how go build ended.
func (e *Error) Unwrap() error { return e.Err }

// Build compiles the filter whose main package is in dir to the .wasm
// file out, which it creates or replaces. A failed compilation is an
// *Error holding the compiler's messages.
func Build(dir, out string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if out, err = filepath.Abs(out); err != nil { // go build runs in dir
		return err
	}
	cmd := exec.Command(goTool(), append(buildArgs, "-o", out, ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), buildEnv...)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		return &Error{Dir: dir, Err: err, Output: output.Bytes()}
	}
	return nil
}

// buildArgs and buildEnv make go build produce a WASI reactor (ABI.md).
var (
	buildArgs = []string{"build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w"}
	buildEnv  = []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}
)

// Cached compiles the filter in dir as Build does and returns the path of
// the .wasm file, which it keeps under cacheDir (or under the user's cache
// directory when cacheDir is ""): a build is reused while the Go version,
// the filter's sources, its module's go.mod and go.sum and (for filters
// inside Sluice's module) the SDK's sources stay the same. Concurrent
// builds of the same sources are safe.
func Cached(dir, cacheDir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	root, err := moduleRoot(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), buildArgs, buildEnv)
	for _, p := range []string{dir, sdkDir()} {
		if err := hashSources(h, p); err != nil {
			return "", err
		}
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		b, _ := os.ReadFile(filepath.Join(root, name))
		h.Write(b)
	}
	if cacheDir == "" {
		if base, err := os.UserCacheDir(); err == nil {
			cacheDir = filepath.Join(base, "sluice-filtertest")
		} else {
			cacheDir = filepath.Join(os.TempDir(), "sluice-filtertest")
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(cacheDir, hex.EncodeToString(h.Sum(nil))[:32]+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp, err := os.CreateTemp(cacheDir, "build-*.wasm")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := Build(dir, tmp.Name()); err != nil {
		return "", err
	}
	// Rename is atomic: a concurrent build of the same sources ends with
	// the same file.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return out, nil
}

// goTool is the go command of the toolchain this program was built with
// when it is still there, else the one on the PATH.
func goTool() string {
	if root := runtime.GOROOT(); root != "" { // "" in a binary built with -trimpath
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func moduleRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("filterbuild: " + dir + " is not inside a Go module")
		}
	}
}

// sdkDir is the source directory of package sdk, the parent of this
// file's, or "" when this program was built without its sources at hand
// (-trimpath, or a binary run elsewhere).
func sdkDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	dir := filepath.Dir(filepath.Dir(file))
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return ""
	}
	return dir
}

// hashSources hashes the names and contents of dir's .go files, not those
// of its subdirectories (so the SDK's own subpackages are skipped).
func hashSources(h interface{ Write([]byte) (int, error) }, dir string) error {
	if dir == "" {
		return nil
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return nil
}
