package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk"
	"github.com/sluicedb/sluice/sdk/filtertest"
)

// testTimeout is the deadline of each call in these tests: they check
// decisions, not speed, and a busy machine (the race detector, test
// binaries in parallel) can stall a call past the host's default 2 ms,
// which the failure policy would then answer in the filter's place.
const testTimeout = time.Second

// load builds and loads the filter with the JSON configuration config.
func load(t *testing.T, config string) *filtertest.Harness {
	t.Helper()
	return filtertest.Load(t, ".", filtertest.Options{Config: []byte(config), Timeout: testTimeout})
}

const policy = `{"never_pin_set": ["application_name", "TimeZone"], "pin_on_functions": ["my_session_fn", "app_set_tenant"]}`

// want is a pin decision: PinKeep, PinNever, or PinForce with a reason.
type want struct {
	pin    session.PinDecision
	reason string
}

var (
	keep  = want{pin: session.PinKeep}
	never = want{pin: session.PinNever}
)

func force(fn string) want { return want{session.PinForce, "call of " + fn + "()"} }

// check decides sql in s and checks the pin decision, and that the filter
// neither routes, rejects nor rewrites.
func check(t *testing.T, s *filtertest.Session, sql string, prepared bool, w want) {
	t.Helper()
	var d filters.Decision
	if prepared {
		d = s.Prepared(sql)
	} else {
		d = s.Query(sql)
	}
	if d.Pin != w.pin || d.PinReason != w.reason || d.Route != (session.Route{}) || d.Reject != nil || d.Rewrite != "" {
		t.Errorf("%q (prepared %v): got pin %v %q (%+v), want pin %v %q only", sql, prepared, d.Pin, d.PinReason, d, w.pin, w.reason)
	}
}

// Calls of the chosen functions pin the session, whatever Sluice's
// classifier says of them (a user function has no effect it can name).
func TestPinPolicyForcesPin(t *testing.T) {
	h := load(t, policy)
	s := h.Session(t, filters.SessionAttrs{User: "app"})
	defer s.Close()
	for _, tc := range []struct {
		sql string
		w   want
	}{
		{"SELECT my_session_fn()", force("my_session_fn")},
		{"select MY_SESSION_FN(42)", force("my_session_fn")},
		{"SELECT app.my_session_fn ('x')", force("my_session_fn")},
		{`SELECT "my_session_fn"()`, force("my_session_fn")},
		{"SELECT my_session_fn\n\t(1)", force("my_session_fn")},
		{"SELECT my_session_fn /* why not */ (1)", force("my_session_fn")},
		{"SELECT my_session_fn -- a comment\n (1)", force("my_session_fn")},
		{"SELECT 1; SELECT app_set_tenant('acme')", force("app_set_tenant")},
		{"INSERT INTO t VALUES (1), (app_set_tenant('a'))", force("app_set_tenant")},
		{"SELECT x FROM t WHERE y = my_session_fn(1) AND app_set_tenant(2)", force("my_session_fn")},
		// Not calls of them.
		{"SELECT 'my_session_fn()'", keep},
		{"SELECT $$ my_session_fn() $$", keep},
		{"SELECT 1 -- my_session_fn()", keep},
		{"SELECT /* my_session_fn() */ 1", keep},
		{`SELECT "My_Session_Fn"()`, keep}, // another function: quoted names are exact
		{"SELECT my_session_fn_2()", keep},
		{"SELECT xmy_session_fn()", keep},
		{"SELECT my_session_fn FROM t", keep}, // a column
		{"SELECT 1", keep},
		{"INSERT INTO t VALUES (1), (2), (3)", keep},
		// The classifier's own pins are kept as they are.
		{"LISTEN x", keep},
		{"SELECT pg_advisory_lock(1)", keep},
	} {
		check(t, s, tc.sql, false, tc.w)
	}
	// In a transaction and with the extended protocol too.
	check(t, s, "BEGIN", false, keep)
	check(t, s, "SELECT my_session_fn()", false, force("my_session_fn"))
	check(t, s, "COMMIT", false, keep)
	check(t, s, "SELECT app_set_tenant($1)", true, force("app_set_tenant"))
	if got := h.Counter("forced_pins"); got != 12 {
		t.Errorf("forced_pins = %d, want 12", got)
	}
}

// set_config(..., false) of a listed parameter, which Sluice's classifier
// pins, does not pin; nor do SET and RESET of one.
func TestPinPolicyNeverPins(t *testing.T) {
	h := load(t, policy)
	s := h.Session(t, filters.SessionAttrs{User: "app"})
	defer s.Close()
	for _, tc := range []struct {
		sql string
		w   want
	}{
		{"SELECT set_config('application_name', 'web-7', false)", never},
		{"select SET_CONFIG('Application_Name', $1, false)", never},
		{"SELECT pg_catalog.set_config('application_name', 'x', false)", never},
		{"SELECT set_config('timezone', 'UTC', false), set_config('application_name', 'x', false)", never},
		{"SELECT set_config('application_name', 'x' || $1, false) AS app", never},
		{"SET application_name = 'web'", never},
		{"SET SESSION application_name TO 'web'", never},
		{"SET TimeZone = 'UTC'", never},
		{"SET TIME ZONE 'Europe/Paris'", never},
		{"SET application_name TO DEFAULT", never},
		{"RESET application_name", never},
		{"RESET timezone;", never},
		// Sluice pins for another reason too, or the filter cannot be sure
		// that it does not.
		{"SELECT set_config('application_name', 'x', false), pg_advisory_lock(1)", keep},
		{"SELECT set_config('application_name', lower('X'), false)", keep},
		{"SELECT set_config('work_mem', '8MB', false)", keep},
		{"SELECT set_config('application_name', 'x', false), set_config('work_mem', '8MB', false)", keep},
		{"SELECT s.set_config('application_name', 'x', false)", keep},
		{"SELECT set_config(E'application_name', 'x', false)", keep},
		{"SELECT set_config('application_name', 'x', false) INTO TEMP t", keep},
		{"SELECT set_config('application_name', 'x', false); LISTEN x", keep},
		{"SET application_name = 'x'; LISTEN x", keep},
		{"SELECT /* set_config('application_name', */ set_config('work_mem', '1MB', false)", keep},
		{"SET ROLE admin", keep},
		{"SET work_mem = '8MB'", keep},
		{"SET search_path = public", keep},
		{"SET LOCAL application_name = 'x'", keep}, // no effect on the session
		{"RESET ALL", keep},
		// Nothing to override: set_config(..., true) does not pin.
		{"SELECT set_config('application_name', 'x', true)", keep},
		{"SELECT 1", keep},
		// A call of a chosen function pins, whatever else the text does.
		{"SELECT set_config('application_name', 'x', false), my_session_fn()", force("my_session_fn")},
	} {
		check(t, s, tc.sql, false, tc.w)
	}
	// Sluice applies a prepared statement's effects again at each Bind
	// without asking filters, so the filter says nothing for one.
	check(t, s, "SELECT set_config('application_name', $1, false)", true, keep)
	check(t, s, "SET application_name = 'web'", true, keep)
	if got := h.Counter("never_pins"); got != 12 {
		t.Errorf("never_pins = %d, want 12", got)
	}
}

// Each rule works alone, and reason replaces the words before the name.
func TestPinPolicyOneRule(t *testing.T) {
	h := load(t, `{"pin_on_functions": ["audit_begin"], "reason": "session state of"}`)
	s := h.Session(t, filters.SessionAttrs{})
	check(t, s, "SELECT audit_begin()", false, want{session.PinForce, "session state of audit_begin()"})
	check(t, s, "SELECT set_config('application_name', 'x', false)", false, keep)
	s.Close()

	h = load(t, `{"never_pin_set": ["datestyle", "IntervalStyle"]}`)
	s = h.Session(t, filters.SessionAttrs{})
	defer s.Close()
	check(t, s, "SELECT set_config('DateStyle', 'ISO, DMY', false)", false, never)
	check(t, s, "SET intervalstyle = 'iso_8601'", false, never)
	check(t, s, "SELECT set_config('application_name', 'x', false)", false, keep)
	check(t, s, "SELECT audit_begin()", false, keep)
}

func TestPinPolicyRejectsBadConfig(t *testing.T) {
	p := filtertest.Build(t, ".")
	for _, tc := range []struct{ config, err string }{
		{``, "nothing to do"},
		{`{"never_pin_set": [], "pin_on_functions": []}`, "nothing to do"},
		{`{"never_pin_set": ["statement_timeout"]}`, `never_pin_set: "statement_timeout" cannot go unpinned: PostgreSQL does not report it`},
		{`{"never_pin_set": ["search_path"]}`, `never_pin_set: "search_path" cannot go unpinned`},
		{`{"never_pin_set": ["client_encoding"]}`, `never_pin_set: "client_encoding" cannot go unpinned`},
		{`{"pin_on_functions": ["My_Fn"]}`, `pin_on_functions: "My_Fn": not a function name in lower case`},
		{`{"pin_on_functions": ["app.fn"]}`, `pin_on_functions: "app.fn": not a function name`},
		{`{"pin_on_functions": [""]}`, `pin_on_functions: "": not a function name`},
		{`{"pin_on_functions": ["` + strings.Repeat("f", 64) + `"]}`, `not a function name`},
		{`{"pin_on_functions": ["pg_advisory_lock"]}`, `pin_on_functions: "pg_advisory_lock": Sluice pins on it already`},
		{`{"pin_on_functions": ["set_config"]}`, `pin_on_functions: "set_config": Sluice pins on it already`},
		{`{"pin_on_functions": ["f"], "reason": " "}`, "reason: must be 1 to 64 bytes"},
		{`{"pin_on_functions": ["f"], "reasons": "x"}`, `unknown field "reasons"`},
		{`{"never_pin_set": "application_name"}`, "cannot unmarshal string"},
		{`not json`, "invalid character"},
	} {
		h, err := filtertest.LoadModule(p, filtertest.Options{Name: "pinpolicy", Config: []byte(tc.config)})
		if err == nil {
			h.Filter.Close()
			t.Errorf("config %s: loaded, want an error containing %q", tc.config, tc.err)
			continue
		}
		if !errors.Is(err, filters.ErrConfigRejected) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("config %s: error %q, want the filter's refusal containing %q", tc.config, err, tc.err)
		}
	}
}

// The statement hook does not allocate (natively, where the host
// functions do nothing: the filter's own code is what is measured).
func TestPinPolicyDoesNotAllocate(t *testing.T) {
	neverPin = map[string]bool{"application_name": true}
	pinFuncs = map[string]string{"my_session_fn": "call of my_session_fn()"}
	maxFuncLen = len("my_session_fn")
	for _, st := range []sdk.Statement{
		{SQL: "SELECT My_Session_Fn()", Command: "SELECT", Count: 1},
		{SQL: "SELECT set_config('Application_Name', 'x', false)", Command: "SELECT", Count: 1,
			DefaultPin: true, PinReasonCode: reasonSetConfig, Effects: sdk.EffectPin},
		{SQL: "SET Application_Name = 'x'", Command: "SET", Count: 1, Effects: sdk.EffectSet},
		{SQL: "INSERT INTO t VALUES " + strings.Repeat("(1, lower('A')), ", 100) + "(2, 'b')", Command: "INSERT", Count: 1},
	} {
		if n := testing.AllocsPerRun(100, func() { pinPolicy{}.Statement(sdk.Session{}, &st) }); n != 0 {
			t.Errorf("%.40q: %v allocations", st.SQL, n)
		}
	}
	if d := (pinPolicy{}).Statement(sdk.Session{}, &sdk.Statement{SQL: "SET Application_Name = 'x'", Command: "SET", Count: 1, Effects: sdk.EffectSet}); d != sdk.Default().NeverPin() {
		t.Errorf("native decision %+v, want NeverPin", d)
	}
}

// The example in README.md is a valid Sluice filter block whose config the
// filter accepts and acts on.
func TestPinPolicyREADMEConfig(t *testing.T) {
	cfg := filtertest.READMEConfig(t, "README.md", filtertest.Build(t, "."))
	h, err := filtertest.LoadModule(cfg.Module, filtertest.Options{Name: cfg.Name, Config: cfg.Config, Timeout: testTimeout})
	if err != nil {
		t.Fatalf("README config %s: %v", cfg.Config, err)
	}
	defer h.Filter.Close()
	s := h.Session(t, filters.SessionAttrs{})
	defer s.Close()
	check(t, s, "SELECT set_config('application_name', 'web', false)", false, never)
	check(t, s, "SELECT app_set_tenant('acme')", false, want{session.PinForce, "call of app_set_tenant()"})
}

func TestPinPolicySurvives(t *testing.T) {
	h := filtertest.Load(t, ".", filtertest.Options{Config: []byte(policy), Timeout: 200 * time.Millisecond})
	h.Survive(t, 2000, 11)
}

// FuzzMayCall checks that the quick look never misses a call that the
// tokenizer finds, and that neither panics.
func FuzzMayCall(f *testing.F) {
	for _, s := range []string{
		"SELECT my_session_fn()", "SELECT my_session_fn -- x\n()", "SELECT my_session_fn/**/()",
		`SELECT "my_session_fn"()`, "SELECT 'my_session_fn('", "SELECT fn\v(", "E'\\", "$a$ fn( $a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		pinFuncs = map[string]string{"my_session_fn": "r", "fn": "r"}
		maxFuncLen = len("my_session_fn")
		if _, ok := calls(sql); ok && !mayCall(sql) {
			t.Fatalf("%q: calls finds a call that mayCall misses", sql)
		}
		onlySetsListed(sql)
		setsListed(sql)
	})
}
