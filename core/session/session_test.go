package session

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
)

func TestDeallocateName(t *testing.T) {
	tests := []struct {
		sql  string
		name string
		ok   bool
	}{
		{"DEALLOCATE _pg3_0", "_pg3_0", true},
		{"deallocate prepare _pg3_12;", "_pg3_12", true},
		{`DEALLOCATE "MixedCase"`, "MixedCase", true},
		{`DEALLOCATE "a""b"`, `a"b`, true},
		{"DEALLOCATE Upper", "upper", true},
		{"DEALLOCATE ALL", "", false},
		{"DEALLOCATE PREPARE ALL", "", false},
		{"DEALLOCATE a; SELECT 1", "", false},
		{"SELECT 'DEALLOCATE a'", "", false},
		{"DEALLOCATE", "", false},
		{"/* c */ DEALLOCATE a", "", false},
	}
	for _, tt := range tests {
		name, ok := deallocateName(append([]byte(tt.sql), 0))
		if name != tt.name || ok != tt.ok {
			t.Errorf("deallocateName(%q) = %q, %v; want %q, %v", tt.sql, name, ok, tt.name, tt.ok)
		}
	}
}

func TestPinSetTexts(t *testing.T) {
	p := reasonBit(sqlclass.ReasonListen) | reasonBit(sqlclass.ReasonTempObject) | pinUntrackedSet
	want := []string{"LISTEN", ReasonUntrackedSet, "temporary table, view or sequence"} // sorted
	if got := p.texts(""); !reflect.DeepEqual(got, want) {
		t.Fatalf("texts() = %q, want %q", got, want)
	}
	if got := pinSet(0).texts(""); got != nil {
		t.Fatalf("empty set texts() = %q", got)
	}
}

// default_transaction_read_only is the connection's own (on for the
// writer's read-only pool) unless the client chose a value: a default seen
// at login elsewhere is never written over it.
func TestSyncLeavesServerChosenReadOnly(t *testing.T) {
	srv := func() *pool.ServerState {
		return &pool.ServerState{
			Params:   map[string]string{"default_transaction_read_only": "on", "TimeZone": "UTC"},
			Reported: map[string]string{"default_transaction_read_only": "on", "TimeZone": "UTC"},
		}
	}
	var p params
	p.values = map[string]string{"default_transaction_read_only": "off", "TimeZone": "UTC"}
	if q := p.syncQuery(srv()); q != "" {
		t.Errorf("login default synced over the connection's own: %q", q)
	}
	left := srv() // a previous client turned it off
	left.Params["default_transaction_read_only"] = "off"
	p.key = ""
	if q := p.syncQuery(left); !strings.Contains(q, "'default_transaction_read_only', E'on'") {
		t.Errorf("a previous client's value is not undone: %q", q)
	}
	p.claim("default_transaction_read_only")
	p.key = ""
	if q := p.syncQuery(srv()); !strings.Contains(q, "default_transaction_read_only") {
		t.Errorf("the client's own value not synced: %q", q)
	}
}
