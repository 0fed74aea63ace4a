package sqlclass

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzClassify feeds Classify arbitrary text, as a client may send: it must
// return, never panic, and report only well-formed effects. The seeds are
// the statements of the table test; testdata/fuzz/FuzzClassify holds more.
func FuzzClassify(f *testing.F) {
	for _, tc := range classifyCases {
		f.Add(tc.sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		got := classifyWithin(t, sql, 10*time.Second)
		if n := strings.Count(sql, ";") + 1; len(got) > n {
			t.Fatalf("Classify(%q) returned %d statements from %d semicolons", sql, len(got), n-1)
		}
		for _, st := range got {
			checkStatement(t, sql, st)
		}

		// ClassifyOne agrees with Classify on a single statement.
		one := ClassifyOne(sql)
		checkStatement(t, sql, one)
		switch len(got) {
		case 0:
			if !reflect.DeepEqual(one, Statement{}) {
				t.Fatalf("ClassifyOne(%q) = %+v, Classify found no statement", sql, one)
			}
		case 1:
			if !reflect.DeepEqual(one, got[0]) {
				t.Fatalf("ClassifyOne(%q) = %+v, Classify = %+v", sql, one, got[0])
			}
		}

		// Split finds the same statements.
		checkSplit(t, sql)

		// Empty statements around the text change nothing.
		for _, variant := range []string{sql + ";", ";" + sql, "\n" + sql} {
			if again := Classify(nil, variant); !reflect.DeepEqual(again, got) {
				t.Fatalf("Classify(%q) = %s\nbut Classify(%q) = %s", sql, format(got), variant, format(again))
			}
		}
	})
}

// classifyWithin runs Classify and fails the test if it has not returned
// within d.
func classifyWithin(t *testing.T, sql string, d time.Duration) []Statement {
	t.Helper()
	done := make(chan []Statement, 1)
	go func() { done <- Classify(nil, sql) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case got := <-done:
		return got
	case <-timer.C:
		t.Fatalf("Classify(%q) did not return within %v", sql, d)
		return nil
	}
}

// checkStatement fails the test unless st is well formed.
func checkStatement(t *testing.T, sql string, st Statement) {
	t.Helper()
	if st.Effects != nil && len(st.Effects) == 0 {
		t.Fatalf("Classify(%q): empty but non-nil effects", sql)
	}
	if st.ReadOnly && st.Effects != nil {
		t.Fatalf("Classify(%q): read-only statement with effects %v", sql, st.Effects)
	}
	for i := 0; i < len(st.Command); i++ {
		if c := st.Command[i]; c >= 'a' && c <= 'z' {
			t.Fatalf("Classify(%q): command %q is not upper case", sql, st.Command)
		}
	}
	for _, e := range st.Effects {
		if !e.Kind.Valid() {
			t.Fatalf("Classify(%q): invalid effect kind %d", sql, e.Kind)
		}
		switch e.Kind {
		case Pin, Unpin:
			if !e.Reason.Valid() || e.Name != "" || e.Value != "" {
				t.Fatalf("Classify(%q): malformed %+v", sql, e)
			}
		case SetParam, ResetParam:
			if e.Reason != 0 || e.Name == "" || (e.Kind == SetParam) != (e.Value != "") {
				t.Fatalf("Classify(%q): malformed %+v", sql, e)
			}
			if hasUpper(e.Name) {
				t.Fatalf("Classify(%q): name %q is not lower case", sql, e.Name)
			}
			if !strings.Contains(sql, e.Value) {
				t.Fatalf("Classify(%q): value %q is not from the text", sql, e.Value)
			}
		default:
			if e.Reason != 0 || e.Name != "" || e.Value != "" {
				t.Fatalf("Classify(%q): malformed %+v", sql, e)
			}
		}
	}
}

// TestClassifyLinear checks that adversarial nesting, which could make a
// look-ahead quadratic, is classified quickly.
func TestClassifyLinear(t *testing.T) {
	for _, sql := range []string{
		strings.Repeat("set_config(", 20000),
		"SELECT " + strings.Repeat("set_config('a', ", 20000) + strings.Repeat("'b', true)", 20000),
		strings.Repeat("(", 50000),
		"SELECT " + strings.Repeat("/*", 50000),
		strings.Repeat("EXPLAIN ", 50000) + "SELECT 1",
		strings.Repeat("$a$", 30000),
		strings.Repeat("SET x = 1;", 20000),
		"SELECT " + strings.Repeat(" INTO TEMP", 30000),
	} {
		start := time.Now()
		classifyWithin(t, sql, 10*time.Second)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Classify of %d bytes starting %.20q took %v", len(sql), sql, d)
		}
	}
}
