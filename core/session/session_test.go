package session

import (
	"reflect"
	"testing"

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
