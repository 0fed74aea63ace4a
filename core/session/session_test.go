package session

import (
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

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

// Sessions that logged in alike share one interned set of parameters; a
// change in one is copied first and never seen by the other, and RESET
// ALL goes back to the shared set.
func TestParamsSharedUntilChanged(t *testing.T) {
	a, b := newHarness(t, ModeTransaction), newHarness(t, ModeTransaction)
	pa, pb := &a.m.params, &b.m.params
	if pa.shared == nil || pa.shared != pb.shared || pa.start != pa.shared {
		t.Fatalf("two alike logins do not share their parameters: %p, %p", pa.shared, pb.shared)
	}
	key := pa.fingerprint()
	pa.put("TimeZone", "UTC") // the same value: nothing copied
	if pa.shared == nil {
		t.Fatal("putting an unchanged value copied the parameters")
	}
	pa.put("TimeZone", "Europe/Paris")
	if pa.shared != nil || pa.values["TimeZone"] != "Europe/Paris" || pa.fingerprint() == key {
		t.Fatalf("after a change: shared %p, TimeZone %q", pa.shared, pa.values["TimeZone"])
	}
	if pb.values["TimeZone"] != "UTC" || pb.fingerprint() != key {
		t.Fatalf("the other session saw the change: TimeZone %q", pb.values["TimeZone"])
	}
	pa.resetAll = true
	pa.readBack(newServer())
	if pa.shared != pb.shared || pa.values["TimeZone"] != "UTC" || pa.fingerprint() != key {
		t.Fatalf("RESET ALL did not return to the login's shared set: %p, %q", pa.shared, pa.values["TimeZone"])
	}
}

// An interned set that no session holds any more leaves the table.
func TestInternedParamsAreCollected(t *testing.T) {
	key := fingerprintOf(map[string]string{"application_name": "collected-test"})
	func() {
		ps := internParams(map[string]string{"application_name": "collected-test"})
		if again := internParams(map[string]string{"application_name": "collected-test"}); again != ps {
			t.Fatalf("the same values interned twice: %p, %p", ps, again)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		interned.Lock()
		_, ok := interned.sets[key]
		interned.Unlock()
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an unreferenced interned set stayed in the table")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
