package sqlclass

import (
	"strings"
	"testing"
)

func TestLexer(t *testing.T) {
	// Each want lists the tokens as kind:text, where the kind is one of
	// i (identifier), q (quoted identifier), s (string), n (number),
	// p (parameter) or . (punctuation).
	for _, tc := range []struct {
		src          string
		want         string
		unterminated bool
	}{
		{"SELECT a.b, 1.5e3 FROM t", "i:SELECT i:a .:. i:b .:, n:1.5e3 i:FROM i:t", false},
		{"a--comment\nb", "i:a i:b", false},
		{"a/* x /* y */ z */b", "i:a i:b", false},
		{"a /* x /* y */ z", "i:a", true},
		{"'it''s' E'\\'' e'\\\\' N'n' B'01' X'ff' U&'\\0041'", `s:'it''s' s:E'\'' s:e'\\' s:N'n' s:B'01' s:X'ff' s:U&'\0041'`, false},
		{`"a""b" U&"c"`, `q:"a""b" q:U&"c"`, false},
		{"$1 $23 $$x$$ $t$ $$ $t$ $_9$a$_9$", "p:$1 p:$23 s:$$x$$ s:$t$ $$ $t$ s:$_9$a$_9$", false},
		{"$1x $9$ $T$ $t$", "p:$1 i:x p:$9 .:$ s:$T$ $t$", true},
		{"a$$b $ 1", "i:a$$b .:$ n:1", false},
		{"thE'x' U&x", "i:thE s:'x' i:U .:& i:x", false},
		{"2*/**/3 4--5", "n:2 .:* n:3 n:4", false},
		{"'open", "s:'open", true},
		{`"open`, `q:"open`, true},
		{"$q$open", "s:$q$open", true},
		{`E'open\'`, `s:E'open\'`, true},
		{"é_1 ünïcode", "i:é_1 i:ünïcode", false},
		{".5 :: 1.e-2 1..2", "n:.5 .:: .:: n:1.e-2 n:1 .:. n:.2", false},
		{"1E'\\'' 1abc 0x1F 1e 1e+", `n:1 s:E'\'' n:1 i:abc n:0 i:x1F n:1 i:e n:1 i:e .:+`, false},
	} {
		l := lexer{src: tc.src}
		var got []string
		for {
			tok := l.next()
			if tok.kind == tokEOF {
				break
			}
			got = append(got, string("?iqsnp."[tok.kind])+":"+tc.src[tok.start:tok.end])
		}
		if g := strings.Join(got, " "); g != tc.want || l.unterminated != tc.unterminated {
			t.Errorf("lexing %q\n got %s (unterminated %v)\nwant %s (unterminated %v)", tc.src, g, l.unterminated, tc.want, tc.unterminated)
		}
	}
}

func TestLookupKeyword(t *testing.T) {
	for _, tc := range []struct {
		w    string
		want keyword
	}{
		{"select", kwSelect}, {"SeLeCt", kwSelect}, {"SELECT", kwSelect},
		{"selects", kwNone}, {"s", kwNone}, {"characteristics", kwCharacteristics},
		{"characteristicsx", kwNone}, {"ünïcode", kwNone}, {"none", kwNoneWord},
	} {
		if got := lookupKeyword(tc.w); got != tc.want {
			t.Errorf("lookupKeyword(%q) = %d, want %d", tc.w, got, tc.want)
		}
	}
	// restKeyword agrees with lookupKeyword on the words it knows.
	for _, w := range []string{"for", "KEY", "No", "share", "insert", "UPDATE", "delete", "merge", "into", "on", "commit", "drop", "drops", "in", "fo_", "upd@te"} {
		if got, want := restKeyword(w), lookupKeyword(w); got != want {
			t.Errorf("restKeyword(%q) = %d, lookupKeyword = %d", w, got, want)
		}
	}
}

func TestLookupFunc(t *testing.T) {
	for _, tc := range []struct {
		name string
		want funcKind
	}{
		{"pg_advisory_lock", fnAdvisoryLock},
		{"PG_TRY_ADVISORY_LOCK_SHARED", fnAdvisoryLock},
		{"pg_advisory_unlock_all", fnAdvisoryUnlockAll},
		{"pg_advisory_unlock", fnWrites},
		{"pg_advisory_xact_lock_shared", fnWrites},
		{"set_config", fnSetConfig},
		{"nextval", fnWrites},
		{"lo_from_bytea", fnWrites},
		{"pg_stat_reset_shared", fnWrites},
		{"currval", fnWrites},
		{"pg_current_wal_lsn", fnWrites},
		{"brin_summarize_new_values", fnWrites},
		{"now", fnReads},
		{"COUNT", fnReads},
		{"pg_sleep", fnReads},
		{"jsonb_build_object", fnReads},
		{"numeric", fnReads},
		{"exists", fnReads},
		{"my_volatile_function", fnUnknown},
		{"pg_catalog_thing", fnUnknown},
		{"", fnUnknown},
		{strings.Repeat("x", 100), fnUnknown},
	} {
		if got := lookupFunc(tc.name); got != tc.want {
			t.Errorf("lookupFunc(%q) = %d, want %d", tc.name, got, tc.want)
		}
	}
}
