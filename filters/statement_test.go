package filters_test

import (
	"testing"

	"github.com/sluicedb/sluice/filters"
)

func TestNewStatement(t *testing.T) {
	st := filters.NewStatement("BEGIN; SELECT 1", false, false)
	if len(st.Class) != 2 || st.Class[0].Command != "BEGIN" || !st.Borrow || st.InTransaction || st.Extended {
		t.Errorf("simple Query outside a transaction: %+v", st)
	}
	// A Parse holds one statement: more is classified as not understood.
	st = filters.NewStatement("SELECT 1; SELECT 2", true, true)
	if len(st.Class) != 1 || st.Class[0].ReadOnly || st.Class[0].Effects == nil || st.Borrow || !st.InTransaction || !st.Extended {
		t.Errorf("Parse of two statements in a transaction: %+v", st)
	}
}

func TestInTransactionAfter(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		before bool
		want   bool
		why    string
	}{
		{"BEGIN", false, true, "BEGIN opens"},
		{"start transaction read only", false, true, "START TRANSACTION opens"},
		{"BEGIN; SELECT 1", false, true, "a BEGIN before the last statement opens"},
		{"SELECT 1", true, true, "a statement in a transaction keeps it"},
		{"COMMIT", true, false, "COMMIT closes"},
		{"END", true, false, "END closes"},
		{"ABORT", true, false, "ABORT closes"},
		{"-- undo it all, back to the start\nROLLBACK", true, false, "a comment saying TO is not ROLLBACK TO"},
		{"ROLLBACK TO SAVEPOINT a", true, true, "ROLLBACK TO keeps it"},
		{"rollback work to a", true, true, "ROLLBACK WORK TO keeps it"},
		{"COMMIT AND CHAIN", true, true, "AND CHAIN keeps it"},
		{"COMMIT AND NO CHAIN", true, false, "AND NO CHAIN closes"},
		{"PREPARE TRANSACTION 'x'", true, false, "PREPARE TRANSACTION closes"},
		{"COMMIT; BEGIN", true, true, "a BEGIN after a COMMIT opens again"},
		{"SELECT 'BEGIN'", false, false, "a string is not a BEGIN"},
	} {
		if got := filters.InTransactionAfter(tc.sql, tc.before); got != tc.want {
			t.Errorf("InTransactionAfter(%q, %v) = %v, want %v: %s", tc.sql, tc.before, got, tc.want, tc.why)
		}
	}
}
