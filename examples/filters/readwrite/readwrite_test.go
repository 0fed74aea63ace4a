package main

import (
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk/filtertest"
)

func TestReadWrite(t *testing.T) {
	h := filtertest.Load(t, ".", filtertest.Options{})
	s := h.Session(t, filters.SessionAttrs{User: "app", Database: "shop"})
	defer s.Close()

	for _, step := range []struct {
		sql  string
		want session.Role
	}{
		{"SELECT * FROM orders", session.RoleReplica},
		{"INSERT INTO orders VALUES (1)", session.RoleWriter},
		{"/* sluice:writer */ SELECT * FROM orders", session.RoleWriter},
		{"SELECT nextval('order_id')", session.RoleWriter}, // may write
		{"SELECT * FROM orders FOR UPDATE", session.RoleWriter},
		{"BEGIN READ ONLY", session.RoleReplica},
		{"SELECT 1", session.RoleDefault}, // inside the transaction: the server is fixed
		{"COMMIT", session.RoleDefault},
		{"BEGIN", session.RoleWriter},
		{"SELECT 1", session.RoleDefault},
		{"COMMIT", session.RoleDefault},
		{"SELECT 1; SELECT 2", session.RoleReplica},
		{"SELECT 1; DELETE FROM orders", session.RoleWriter},
	} {
		d := s.Query(step.sql)
		if d.Route.Role != step.want || d.Reject != nil || d.Rewrite != "" || d.Pin != session.PinKeep {
			t.Errorf("%q: got %+v, want route %v only", step.sql, d, step.want)
		}
	}
	if got := h.Counter("replica"); got != 3 {
		t.Errorf("replica counter = %d, want 3", got)
	}
	if got := h.Counter("hinted_writer"); got != 1 {
		t.Errorf("hinted_writer counter = %d, want 1", got)
	}
}

func TestReadWriteConfiguredHint(t *testing.T) {
	h := filtertest.Load(t, ".", filtertest.Options{Config: []byte(`{"hint": "/*primary*/"}`)})
	s := h.Session(t, filters.SessionAttrs{})
	defer s.Close()
	if d := s.Query("/*primary*/ SELECT 1"); d.Route.Role != session.RoleWriter {
		t.Errorf("configured hint: got %v, want writer", d.Route.Role)
	}
	if d := s.Query("/* sluice:writer */ SELECT 1"); d.Route.Role != session.RoleReplica {
		t.Errorf("old hint after reconfiguration: got %v, want replica", d.Route.Role)
	}
}

func TestReadWriteRejectsBadConfig(t *testing.T) {
	p := filtertest.Build(t, ".")
	for _, cfg := range []string{`{"hint": ""}`, `{"hnt": "x"}`, `not json`} {
		h, err := filtertest.LoadModule(p, filtertest.Options{Name: "readwrite", Config: []byte(cfg)})
		if err == nil {
			h.Filter.Close()
			t.Errorf("config %s: loaded, want an error", cfg)
			continue
		}
		t.Logf("config %s: %v", cfg, err)
	}
}

// The filter survives generated statements (some of 100-300 KB) without
// trapping; the deadline is generous because this checks for traps and
// runaway calls, not speed, on a machine make test keeps busy.
func TestReadWriteSurvives(t *testing.T) {
	h := filtertest.Load(t, ".", filtertest.Options{Timeout: 200 * time.Millisecond})
	h.Survive(t, 2000, 1)
}
