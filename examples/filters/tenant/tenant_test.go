package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/wire"
	"github.com/sluicedb/sluice/filters"
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

const byApp = `{
  "by": "application_name",
  "separator": "-",
  "clusters": {"acme": "cluster_a", "acme-eu": "cluster_eu", "globex": "cluster_b"},
  "reject_unknown": true
}`

// Each session is served from its tenant's cluster: the session's route
// and every statement's, whatever the statement.
func TestTenantRoutesSessions(t *testing.T) {
	h := load(t, byApp)
	for _, tc := range []struct{ app, want string }{
		{"acme", "cluster_a"},
		{"globex", "cluster_b"},
		{"acme-web", "cluster_a"},       // the tenant before the separator
		{"acme-eu", "cluster_eu"},       // an exact match first
		{"acme-eu-web", "cluster_eu"},   // the longest tenant that matches
		{"acme-eu-web-2", "cluster_eu"}, // whatever follows
		{"globex-batch-7", "cluster_b"}, //
		{"acme-unknown-x", "cluster_a"}, // "acme-unknown" is no tenant: "acme" is
		{"acme-", "cluster_a"},          // an empty suffix
	} {
		s := h.Session(t, filters.SessionAttrs{User: "app", Database: "shop", ApplicationName: tc.app})
		if got := s.Cluster(); got != tc.want {
			t.Errorf("application_name %q: session cluster %q, want %q", tc.app, got, tc.want)
		}
		for _, sql := range []string{"SELECT 1", "INSERT INTO t VALUES (1)", "BEGIN", "UPDATE t SET a = 1 WHERE id = 2", "COMMIT"} {
			d := s.Query(sql)
			if d.Route.Cluster != tc.want || d.Route.Role != session.RoleDefault || d.Reject != nil || d.Pin != session.PinKeep {
				t.Errorf("application_name %q, %q: got %+v, want the default route of cluster %q only", tc.app, sql, d, tc.want)
			}
		}
		if d := s.Prepared("SELECT $1"); d.Route.Cluster != tc.want {
			t.Errorf("application_name %q, prepared: cluster %q, want %q", tc.app, d.Route.Cluster, tc.want)
		}
		s.Close()
	}
	for cluster, want := range map[string]int64{"to_cluster_a": 4, "to_cluster_b": 2, "to_cluster_eu": 3} {
		if got := h.Counter(cluster); got != want {
			t.Errorf("counter %s = %d, want %d", cluster, got, want)
		}
	}
}

// A session whose tenant is not in the map is refused with
// invalid_authorization_specification, as the client sees it: FATAL
// 28000, naming the attribute and the value.
func TestTenantRejectsUnknown(t *testing.T) {
	h := load(t, byApp)
	for app, msg := range map[string]string{
		"initech":                        `no cluster for application_name "initech"`,
		"":                               `no cluster for application_name ""`,
		"acmecorp":                       `no cluster for application_name "acmecorp"`, // no separator: no prefix match
		"-acme":                          `no cluster for application_name "-acme"`,
		"ACME":                           `no cluster for application_name "ACME"`, // names are case-sensitive
		"x\n" + strings.Repeat("y", 100): `no cluster for application_name "x\n` + strings.Repeat("y", 61) + `"...`,
	} {
		s, err := h.Start(filters.SessionAttrs{User: "app", ApplicationName: app})
		if err == nil {
			s.Close()
			t.Errorf("application_name %q: session accepted on cluster %q, want it refused", app, s.Cluster())
			continue
		}
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != "28000" || we.Severity != wire.SeverityFatal || we.Message != msg {
			t.Errorf("application_name %q: got %v, want FATAL 28000 %q", app, err, msg)
		}
	}
	if got := h.Counter("rejected"); got != 6 {
		t.Errorf("rejected counter = %d, want 6", got)
	}
}

// By user, with a default cluster: unknown users go to it; and without
// either default or reject_unknown, to the listener's cluster.
func TestTenantByUserAndFallbacks(t *testing.T) {
	h := load(t, `{"by": "user", "clusters": {"alice": "cluster_a", "bob": "cluster_b"}, "default": "shared"}`)
	for user, want := range map[string]string{"alice": "cluster_a", "bob": "cluster_b", "carol": "shared", "alice-x": "shared"} {
		s := h.Session(t, filters.SessionAttrs{User: user, ApplicationName: "bob"})
		if got := s.Cluster(); got != want {
			t.Errorf("user %q: cluster %q, want %q", user, got, want)
		}
		if d := s.Query("SELECT 1"); d.Route.Cluster != want {
			t.Errorf("user %q: statement cluster %q, want %q", user, d.Route.Cluster, want)
		}
		s.Close()
	}
	if got, want := h.Counter("to_shared"), int64(2); got != want {
		t.Errorf("to_shared = %d, want %d", got, want)
	}
	if got, want := h.Counter("unknown"), int64(2); got != want {
		t.Errorf("unknown = %d, want %d", got, want)
	}

	h = load(t, `{"by": "user", "clusters": {"alice": "cluster_a"}}`)
	s := h.Session(t, filters.SessionAttrs{User: "carol"})
	defer s.Close()
	if got := s.Cluster(); got != "" {
		t.Errorf("unknown user without default: cluster %q, want the listener's (\"\")", got)
	}
	if d := s.Query("SELECT 1"); d.Route != (session.Route{}) {
		t.Errorf("unknown user without default: route %+v, want the listener's default", d.Route)
	}
}

func TestTenantRejectsBadConfig(t *testing.T) {
	p := filtertest.Build(t, ".")
	for _, tc := range []struct{ config, err string }{
		{``, `by: missing`},
		{`{"clusters": {"a": "b"}}`, `by: missing`},
		{`{"by": "database", "clusters": {"a": "b"}}`, `by: must be "application_name" or "user", got "database"`},
		{`{"by": "user"}`, `clusters: must map at least one tenant`},
		{`{"by": "user", "clusters": {}}`, `clusters: must map at least one tenant`},
		{`{"by": "user", "clusters": {"": "a"}}`, `clusters: a tenant name is empty`},
		{`{"by": "user", "clusters": {"acme": ""}}`, `clusters.acme: the cluster name is empty`},
		{`{"by": "user", "clusters": {"acme": "` + strings.Repeat("c", 62) + `"}}`, `is longer than 61 bytes`},
		{`{"by": "user", "clusters": {"a": "b"}, "default": " "}`, `default: the cluster name is empty`},
		{`{"by": "user", "clusters": {"a": "b"}, "default": "c", "reject_unknown": true}`, `default and reject_unknown: give one`},
		{`{"by": "user", "clusters": {"a": "b"}, "separator": ""}`, `separator: must not be empty`},
		{`{"by": "user", "cluster": {"a": "b"}}`, `unknown field "cluster"`},
		{`{"by": "user", "clusters": {"a": 1}}`, `cannot unmarshal number`},
		{`not json`, `invalid character`},
	} {
		h, err := filtertest.LoadModule(p, filtertest.Options{Name: "tenant", Config: []byte(tc.config)})
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

// The example in README.md is a valid Sluice filter block whose config the
// filter accepts and acts on.
func TestTenantREADMEConfig(t *testing.T) {
	cfg := filtertest.READMEConfig(t, "README.md", filtertest.Build(t, "."))
	h, err := filtertest.LoadModule(cfg.Module, filtertest.Options{Name: cfg.Name, Config: cfg.Config, Timeout: testTimeout})
	if err != nil {
		t.Fatalf("README config %s: %v", cfg.Config, err)
	}
	defer h.Filter.Close()
	s := h.Session(t, filters.SessionAttrs{ApplicationName: "globex-web"})
	defer s.Close()
	if got := s.Cluster(); got != "cluster_b" {
		t.Errorf("README config: globex-web on %q, want cluster_b", got)
	}
	if _, err := h.Start(filters.SessionAttrs{ApplicationName: "initech"}); err == nil {
		t.Error("README config: an unknown tenant was accepted")
	}
}

// The filter survives generated traffic; Survive's sessions have no
// application_name, so they go to the default cluster.
func TestTenantSurvives(t *testing.T) {
	h := filtertest.Load(t, ".", filtertest.Options{
		Config:  []byte(`{"by": "application_name", "clusters": {"acme": "cluster_a"}, "default": "shared"}`),
		Timeout: 200 * time.Millisecond,
	})
	h.Survive(t, 2000, 7)
	if got := h.Counter("to_shared"); got == 0 {
		t.Error("to_shared = 0: Survive's sessions did not start through the filter")
	}
}
