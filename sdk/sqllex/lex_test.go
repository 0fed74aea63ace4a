package sqllex_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/sdk/sqllex"
)

// tokens renders the tokens of src as kind:text.
func tokens(src string) string {
	var out []string
	l := sqllex.Lexer{Src: src}
	for t := l.Next(); t.Kind != sqllex.EOF; t = l.Next() {
		out = append(out, fmt.Sprintf("%d:%s", t.Kind, src[t.Start:t.End]))
	}
	return strings.Join(out, " ")
}

func TestLexer(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"SELECT a FROM t WHERE b = 1", "1:SELECT 1:a 1:FROM 1:t 1:WHERE 1:b 6:= 4:1"},
		{"select 'where' -- where\n/* where /* nested */ where */ x", "1:select 3:'where' 1:x"},
		{`"Where" $1 $tag$ where $tag$ E'it\'s' 'a''b'`, `2:"Where" 5:$1 3:$tag$ where $tag$ 3:E'it\'s' 3:'a''b'`},
		{"somewhere_col(1.5e3)", "1:somewhere_col 6:( 4:1.5e3 6:)"},
		{"'unterminated", "3:'unterminated"},
	} {
		if got := tokens(tc.src); got != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.src, got, tc.want)
		}
	}
	l := sqllex.Lexer{Src: "WHERE x"}
	if w := l.Next(); !l.Is(w, "where") || !sqllex.IsName(w) {
		t.Errorf("Is/IsName on WHERE: %v %v", l.Is(w, "where"), sqllex.IsName(w))
	}
}

// FuzzLexer checks that the lexer never panics, always moves forward and
// returns tokens in order within the text.
func FuzzLexer(f *testing.F) {
	for _, s := range []string{
		"SELECT 1", "E'\\", "$a$ x $a", "$$", "/* /* */", "--", "U&\"x", "1e+", "'it''s'", "$1$2", "\xff\xfe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		l := sqllex.Lexer{Src: src}
		last := 0
		for i := 0; ; i++ {
			tok := l.Next()
			if tok.Start < last || tok.End < tok.Start || tok.End > len(src) {
				t.Fatalf("token %d %+v out of order (last end %d) in %q", i, tok, last, src)
			}
			if tok.Kind == sqllex.EOF {
				break
			}
			if tok.End == tok.Start {
				t.Fatalf("empty token %+v in %q", tok, src)
			}
			last = tok.End
		}
	})
}
