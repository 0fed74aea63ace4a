package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk/filtertest"
)

// The filters these tests run, compiled once per test binary and cached
// on disk (sdk/filtertest).
const (
	readwriteDir = "../../examples/filters/readwrite"
	kitchenDir   = "../../filters/testdata/kitchen" // misbehaves on demand: see its main.go
	garbageDir   = "../../filters/testdata/garbage" // answers garbage to statements starting with g or o
)

// slow is a call deadline that a loaded machine running -race meets, so
// that only the statements meant to fail do.
const slow = "--timeout=1s"

// sqlFile writes text to a file and returns its path.
func sqlFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "statements.sql")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// module builds the filter in dir and returns the path of a copy named
// after dir, as the filter is named after its file.
func module(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filtertest.Build(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(dir)+".wasm")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCmd runs the sluice command with args.
func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestFilterTestFollowsASession(t *testing.T) {
	module := module(t, readwriteDir)
	sql := sqlFile(t, `-- reads go to a replica, writes to the writer
SELECT * FROM t;
INSERT INTO t VALUES (1, 'a;b');

BEGIN;
UPDATE t
   SET a = 2
 WHERE id = 1;
SAVEPOINT s; ROLLBACK TO SAVEPOINT s;
SELECT 1;
COMMIT;
SELECT "semi;colon" FROM t;  ; ;
CREATE FUNCTION f() RETURNS int AS $body$
BEGIN
  RETURN 1; -- a semicolon inside the body
END
$body$ LANGUAGE plpgsql;
/* sluice:writer */ SELECT 2;
SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x, y, z FROM alphabet
`)
	code, out, errs := runCmd("filter", "test", "--module", module, "--sql", sql, slow)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	want := `2  route=replica  pin=keep  action=none  SELECT * FROM t
3  route=writer  pin=keep  action=none  INSERT INTO t VALUES (1, 'a;b')
5  route=writer  pin=keep  action=none  BEGIN
6  route=default  pin=keep  action=none  UPDATE t SET a = 2 WHERE id = 1
9  route=default  pin=keep  action=none  SAVEPOINT s
9  route=default  pin=keep  action=none  ROLLBACK TO SAVEPOINT s
10  route=default  pin=keep  action=none  SELECT 1
11  route=default  pin=keep  action=none  COMMIT
12  route=replica  pin=keep  action=none  SELECT "semi;colon" FROM t
13  route=writer  pin=keep  action=none  CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; -- a semicolon insi...
18  route=writer  pin=keep  action=none  /* sluice:writer */ SELECT 2
19  route=replica  pin=keep  action=none  SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x...
statements=12  rejected=0  rewritten=0  failures=0  counters: hinted_writer=1 replica=3 writer=3
`
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

func TestFilterTestDecisionsAndAttributes(t *testing.T) {
	module := module(t, kitchenDir)
	sql := sqlFile(t, "reject;\nrewrite;\ncluster;\npin;\nnopin;\nwhoami;\nlog;\ndescribe\n")
	code, out, errs := runCmd("filter", "test", "--module", module, "--sql", sql, slow,
		"--user", "alice", "--database", "shop", "--application-name", "web", "--listener", "main", "--extended")
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	want := `1  route=default  pin=keep  action=reject 42501 "kitchen says no"  reject
2  route=writer  pin=keep  action=rewrite "SELECT 2"  rewrite
3  route=cluster:analytics  pin=keep  action=none  cluster
4  route=writer  pin=force("kitchen pin")  action=none  pin
5  route=default  pin=never  action=none  nopin
6  route=cluster:alice@shop/web//main/plain  pin=keep  action=none  whoami
7  route=default  pin=keep  action=none  log
8  route=cluster:DESCRIBE ext  pin=keep  action=none  describe
statements=8  rejected=1  rewritten=1  failures=0  counters: ended=1 sessions=1
`
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(errs, "hello from kitchen") {
		t.Errorf("the filter's log line is not on stderr:\n%s", errs)
	}
}

// The session start's answer is printed: a refusal ends the run, a
// cluster choice shows as the default of every statement's route.
func TestFilterTestSessionStart(t *testing.T) {
	module := module(t, kitchenDir)
	sql := sqlFile(t, "UPDATE t SET a = 1;\n")
	code, out, errs := runCmd("filter", "test", "--module", module, "--sql", sql, slow, "--application-name", "cluster:eu")
	if want := "session  route=cluster:eu\n1  route=cluster:eu  pin=keep  action=none  UPDATE t SET a = 1\n"; code != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("cluster at session start: exit %d, stdout:\n%s\nwant it to begin:\n%s\nstderr:\n%s", code, out, want, errs)
	}
	code, out, errs = runCmd("filter", "test", "--module", module, "--sql", sql, slow, "--user", "stranger")
	if want := "session  action=reject 28000 \"kitchen does not know you\"\n"; code != 0 || out != want {
		t.Errorf("refused session: exit %d, stdout:\n%s\nwant:\n%s\nstderr:\n%s", code, out, want, errs)
	}
}

func TestFilterTestFailures(t *testing.T) {
	sql := sqlFile(t, "SELECT 1;\n\n  panic now;\ngarbage;\nSELECT 2;\n")
	for _, tc := range []struct {
		name, dir, policy string
		lines             []string // lines stdout must hold
		errs              []string // texts stderr must hold
	}{
		{"answers garbage", garbageDir, filters.FailSafe,
			[]string{"4  route=writer  pin=keep  action=none  garbage\n", "5  route=replica  pin=keep  action=none  SELECT 2\n", "failures=1"},
			[]string{`line 4: filter "garbage" failed on "garbage"; fail_safe sent it to the writer`}},
		{"panics", kitchenDir, filters.FailClosed,
			[]string{`3  route=default  pin=keep  action=reject 58000 "filter \"kitchen\" failed"  panic now` + "\n", "5  route=replica  pin=keep  action=none  SELECT 2\n", "failures=1"},
			[]string{`line 3: filter "kitchen" failed on "panic now"; fail_closed rejected it: filter trapped: wasm error`, "kitchen panics"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			module := module(t, tc.dir)
			code, out, errs := runCmd("filter", "test", "--module", module, "--sql", sql, slow, "--failure-policy", tc.policy)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, l := range tc.lines {
				if !strings.Contains(out, l) {
					t.Errorf("stdout lacks %q:\n%s", l, out)
				}
			}
			for _, e := range tc.errs {
				if !strings.Contains(errs, e) {
					t.Errorf("stderr lacks %q:\n%s", e, errs)
				}
			}
		})
	}
	t.Run("times out", func(t *testing.T) {
		module := module(t, kitchenDir)
		code, _, errs := runCmd("filter", "test", "--module", module, "--sql", sqlFile(t, "SELECT 1; loop"), "--timeout", "20ms")
		if want := `line 1: filter "kitchen" failed on "loop"`; code != 1 || !strings.Contains(errs, want) {
			t.Errorf("exit %d, want 1 and %q on stderr:\n%s", code, want, errs)
		}
	})
}

func TestFilterUsageErrors(t *testing.T) {
	kitchen := module(t, kitchenDir)
	sql := sqlFile(t, "SELECT 1")
	for _, tc := range []struct {
		args []string
		want string // on stderr
	}{
		{[]string{"filter"}, "usage: sluice filter build"},
		{[]string{"filter", "run"}, `unknown command "run"`},
		{[]string{"filter", "test", "--sql", sql}, "--module is required"},
		{[]string{"filter", "test", "--module", kitchen}, "--sql is required"},
		{[]string{"filter", "test", "--module", kitchen, "--sql", sql + ".missing"}, "no such file"},
		{[]string{"filter", "test", "--module", sql + ".wasm", "--sql", sql}, "no such file"},
		{[]string{"filter", "test", "--module", sql, "--sql", sql}, "compiling"},
		{[]string{"filter", "test", "--module", kitchen, "--sql", sql, "--config", `{"Reject":true}`}, "kitchen refuses this configuration"},
		{[]string{"filter", "test", "--module", kitchen, "--sql", sql, "--config", `{"Reject":`}, "--config is not valid JSON"},
		{[]string{"filter", "test", "--module", kitchen, "--sql", sql, "--failure-policy", "fail_open"}, `failure_policy "fail_open"`},
		{[]string{"filter", "test", "--module", kitchen, "--sql", sql, "extra"}, `unexpected argument "extra"`},
		{[]string{"filter", "test", "--modul", kitchen}, "flag provided but not defined: -modul"},
		{[]string{"filter", "build"}, "want one directory, got 0"},
		{[]string{"filter", "build", sql}, "is not a directory"},
	} {
		code, out, errs := runCmd(tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2, nothing on stdout, and %q on stderr",
				strings.Join(tc.args, " "), code, out, errs, tc.want)
		}
	}
	if _, _, errs := runCmd(); !strings.Contains(errs, "filter build|test") {
		t.Errorf("the usage line does not mention the filter commands: %q", errs)
	}
}

func TestFilterBuild(t *testing.T) {
	t.Run("compiler errors are shown", func(t *testing.T) {
		dir := goModule(t, "broken", "package main\n\nfunc main() {\n\tx := \n}\n")
		code, out, errs := runCmd("filter", "build", dir)
		if code == 0 || out != "" {
			t.Fatalf("exit %d, stdout %q for a syntax error", code, out)
		}
		if !strings.Contains(errs, "main.go:5:1: syntax error") {
			t.Errorf("stderr lacks the compiler's message:\n%s", errs)
		}
	})
	t.Run("readwrite loads", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "rw.wasm")
		code, stdout, errs := runCmd("filter", "build", readwriteDir, "-o", out) // -o after DIR works too
		if code != 0 || stdout != out+"\n" {
			t.Fatalf("exit %d, stdout %q; stderr:\n%s", code, stdout, errs)
		}
		loads(t, out)
	})
	t.Run("default output", func(t *testing.T) {
		// A guest without the SDK, so that it builds outside Sluice's module.
		src, err := os.ReadFile(filepath.Join(garbageDir, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		dir := goModule(t, "garb", string(src))
		code, stdout, errs := runCmd("filter", "build", dir)
		if want := filepath.Join(dir, "garb.wasm"); code != 0 || stdout != want+"\n" {
			t.Fatalf("exit %d, stdout %q, want %q; stderr:\n%s", code, stdout, want, errs)
		}
		loads(t, filepath.Join(dir, "garb.wasm"))
	})
}

// goModule writes a Go module whose main package, in a directory called
// name, has one file main.go holding src, and returns the directory.
func goModule(t *testing.T, name, src string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, text := range map[string]string{"go.mod": "module example.com/" + name + "\n\ngo 1.24\n", "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// loads fails t unless the host accepts the module at path.
func loads(t *testing.T, path string) {
	t.Helper()
	f, err := filters.Load(context.Background(), filters.Config{Name: "built", Module: path, Instances: 1}, nil)
	if err != nil {
		t.Fatalf("filters.Load of the built module: %v", err)
	}
	f.Close()
}
