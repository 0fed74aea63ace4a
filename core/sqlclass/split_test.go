package sqlclass

import (
	"reflect"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name string
		sql  string
		want []string // the text of each span
	}{
		{"empty", "", nil},
		{"only separators and comments", " ; -- c\n; /* d */ ;", nil},
		{"one without semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"white space and comments kept", "SELECT 1 ;\n-- next\n/* hint */ INSERT INTO t VALUES (1);\n", []string{"SELECT 1 ", "\n-- next\n/* hint */ INSERT INTO t VALUES (1)"}},
		{"quoted semicolons", `SELECT 'a;b', "c;d", E'\';'; SELECT 2`, []string{`SELECT 'a;b', "c;d", E'\';'`, " SELECT 2"}},
		{"dollar quotes", "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql; SELECT $$;$$", []string{"CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql", " SELECT $$;$$"}},
		{"comments with semicolons", "SELECT 1 -- a;b\n; SELECT /* c; /* nested; */ d; */ 2", []string{"SELECT 1 -- a;b\n", " SELECT /* c; /* nested; */ d; */ 2"}},
		{"begin atomic body", "CREATE FUNCTION one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; LISTEN x", []string{"CREATE FUNCTION one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", " LISTEN x"}},
		{"unterminated string runs to the end", "SELECT 1; SELECT 'a; b", []string{"SELECT 1", " SELECT 'a; b"}},
		{"unterminated comment is a statement", "SELECT 1; /* open", []string{"SELECT 1", " /* open"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, sp := range Split(nil, tc.sql) {
				got = append(got, tc.sql[sp.Start:sp.End])
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Split(%q)\n got %q\nwant %q", tc.sql, got, tc.want)
			}
		})
	}
}

// TestSplitAgreesWithClassify checks, over the classifier's table, that
// Split finds one span per statement and that each span, classified on
// its own, is the statement Classify found there.
func TestSplitAgreesWithClassify(t *testing.T) {
	for _, tc := range classifyCases {
		t.Run(tc.name, func(t *testing.T) { checkSplit(t, tc.sql) })
	}
}

// checkSplit fails the test unless Split(sql) agrees with Classify(sql).
func checkSplit(t *testing.T, sql string) {
	t.Helper()
	class := Classify(nil, sql)
	spans := Split(nil, sql)
	if len(spans) != len(class) {
		t.Fatalf("Split(%q) found %d statements, Classify %d", sql, len(spans), len(class))
	}
	end := 0
	for i, sp := range spans {
		if sp.Start < end || sp.End < sp.Start || sp.End > len(sql) {
			t.Fatalf("Split(%q): span %d is %+v after one ending at %d", sql, i, sp, end)
		}
		end = sp.End
		if got := Classify(nil, sql[sp.Start:sp.End]); len(got) != 1 || !reflect.DeepEqual(got[0], class[i]) {
			t.Fatalf("Split(%q): span %d (%q) classifies as %s, within the text as %s",
				sql, i, sql[sp.Start:sp.End], format(got), format(class[i:i+1]))
		}
	}
}

func TestTrimLeft(t *testing.T) {
	for sql, want := range map[string]string{
		"":              "",
		"SELECT 1 -- c": "SELECT 1 -- c",
		" \n\t-- to x\n/* a /* b */ c */ ROLLBACK": "ROLLBACK",
		"-- only a comment":                        "",
		"/* open":                                  "",
		"'x' /* c */":                              "'x' /* c */",
	} {
		if got := TrimLeft(sql); got != want {
			t.Errorf("TrimLeft(%q) = %q, want %q", sql, got, want)
		}
	}
}
