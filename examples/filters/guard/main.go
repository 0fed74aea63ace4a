// Command guard is a Sluice filter that refuses two kinds of statement
// before they reach PostgreSQL: DDL from users who should not run it, and
// UPDATE or DELETE without a WHERE clause, which change every row of a
// table. It checks every statement of a simple Query's text, and the
// statements of the extended protocol.
package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sluicedb/sluice/sdk"
	"github.com/sluicedb/sluice/sdk/sqllex"
)

// guard is the filter. Its only state is its configuration, the same on
// every instance.
type guard struct{}

// The configuration, set once by Configure on every instance.
var (
	checkDDL     bool // a DDL list was given
	ddlAllowList bool // ddlUsers are the only users who may run DDL; else they may not
	ddlUsers     map[string]bool
	requireWhere = true
)

// config is the filter's JSON configuration.
type config struct {
	// DDLUsersDenied lists the users who may not run DDL.
	DDLUsersDenied *[]string `json:"ddl_users_denied"`
	// DDLUsersAllowed lists the only users who may run DDL.
	DDLUsersAllowed *[]string `json:"ddl_users_allowed"`
	// RequireWhere refuses UPDATE and DELETE without WHERE (default true).
	RequireWhere *bool `json:"require_where"`
}

// What a client gets. DDL is a matter of privilege: insufficient_privilege,
// as PostgreSQL answers a user without it. A missing WHERE is refused with
// cardinality_violation and the wording of the pg-safeupdate extension
// (used by PostgREST and Supabase), so that clients and people who know it
// recognise it.
const (
	codeInsufficientPrivilege = "42501"
	codeCardinalityViolation  = "21000"
	msgDelete                 = "guard: DELETE requires a WHERE clause (add WHERE true to delete every row)"
	msgUpdate                 = "guard: UPDATE requires a WHERE clause (add WHERE true to update every row)"
)

// Configure implements sdk.Configurer.
func (guard) Configure(c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.DDLUsersAllowed != nil && cfg.DDLUsersDenied != nil {
		return errors.New("ddl_users_allowed and ddl_users_denied: give one list, not both")
	}
	list, key := cfg.DDLUsersDenied, "ddl_users_denied"
	if cfg.DDLUsersAllowed != nil {
		list, key = cfg.DDLUsersAllowed, "ddl_users_allowed"
	}
	users := make(map[string]bool)
	if list != nil {
		if len(*list) == 0 && cfg.DDLUsersDenied != nil {
			return errors.New("ddl_users_denied: empty: list the users who may not run DDL, or leave the key out")
		}
		for _, u := range *list {
			if u == "" {
				return fmt.Errorf("%s: a user name is empty", key)
			}
			users[u] = true
		}
	}
	where := cfg.RequireWhere == nil || *cfg.RequireWhere
	if list == nil && !where {
		return errors.New("nothing to check: give ddl_users_denied or ddl_users_allowed, or leave require_where true")
	}
	checkDDL, ddlAllowList, ddlUsers, requireWhere = list != nil, cfg.DDLUsersAllowed != nil, users, where
	return nil
}

// Statement implements sdk.StatementHandler. It does not allocate unless
// it refuses the statement.
func (guard) Statement(s sdk.Session, st *sdk.Statement) sdk.Decision {
	if st.Count == 0 || st.Count == 1 && (st.ReadOnly || harmless(st.Command)) {
		return sdk.Default() // the common case, whatever the text's length
	}
	if st.Truncated {
		sdk.Count("truncated", 1)
	}
	c := checker{l: sqllex.Lexer{Src: st.SQL}, s: s, truncated: st.Truncated}
	switch f := c.run(); f.what {
	case refuseDDL:
		sdk.Count("refused_ddl", 1)
		return sdk.Reject(codeInsufficientPrivilege, "guard: DDL ("+strings.ToUpper(st.SQL[f.at.Start:f.at.End])+
			") is not allowed for user "+strconv.Quote(c.user))
	case refuseSelectInto:
		sdk.Count("refused_ddl", 1)
		return sdk.Reject(codeInsufficientPrivilege, "guard: DDL (SELECT INTO, which creates a table) is not allowed for user "+
			strconv.Quote(c.user))
	case refuseDelete:
		sdk.Count("refused_delete", 1)
		return sdk.Reject(codeCardinalityViolation, msgDelete)
	case refuseUpdate:
		sdk.Count("refused_update", 1)
		return sdk.Reject(codeCardinalityViolation, msgUpdate)
	}
	return sdk.Default()
}

// harmless reports whether a statement with the classifier's command cmd
// can be neither DDL nor an UPDATE or DELETE. Any command not listed is
// checked, including the ones the classifier does not know.
func harmless(cmd string) bool {
	switch cmd {
	case "INSERT", "BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
		"SET", "RESET", "SHOW", "FETCH", "MOVE", "CLOSE", "DEALLOCATE", "DISCARD", "LISTEN",
		"UNLISTEN", "NOTIFY", "EXECUTE", "CALL", "LOCK TABLE", "VACUUM", "ANALYZE":
		return true
	}
	return false
}

// refusal is what the checker found wrong with a statement.
type refusal uint8

const (
	refuseNothing refusal = iota
	refuseDDL
	refuseSelectInto
	refuseDelete
	refuseUpdate
)

// finding is a refusal and the sqllex.Token it is about.
type finding struct {
	what refusal
	at   sqllex.Token
}

// checker reads the statements of one text in turn.
type checker struct {
	l         sqllex.Lexer
	s         sdk.Session
	user      string // the session's user, once known
	userKnown bool
	truncated bool // the text is only the first 1 MiB of the statement's
}

// maxOpen bounds the UPDATE and DELETE statements followed at once.
// PostgreSQL allows them only at the top level and directly in WITH (...)
// or COPY (...), so that a deeper one is an error for the server anyway.
const maxOpen = 8

// modifying is an UPDATE or DELETE whose end the checker has not read yet.
type modifying struct {
	what  refusal // the refusal if it ends without WHERE
	depth int     // the parenthesis depth of its key word
	where bool    // a WHERE at that depth
}

// run checks each statement and returns the first refusal.
func (c *checker) run() finding {
	for {
		f, more := c.statement()
		if f.what != refuseNothing || !more {
			return f
		}
	}
}

// statement checks the statement at the lexer's position, up to its
// semicolon, and reports whether another may follow.
func (c *checker) statement() (finding, bool) {
	l := &c.l
	t := c.skipPrefix(l.Next())
	head := t
	if c.isDDL(head) && c.ddlDenied() {
		return finding{refuseDDL, head}, true
	}
	selects := l.Is(head, "select") || l.Is(head, "with") || l.IsPunct(head, '(') // may be SELECT ... INTO
	creates := l.Is(head, "create")                                               // may have a BEGIN ATOMIC body
	var open [maxOpen]modifying
	n, depth, atomic := 0, 0, 0
	prev := sqllex.Token{Kind: sqllex.EOF}
	// A switch on the kind, then on one byte or the length, keeps the
	// branches per sqllex.Token few: they are what a sqllex.Token costs in the host.
	for ; ; prev, t = t, l.Next() {
		switch t.Kind {
		case sqllex.EOF:
			if c.truncated {
				n = 0 // the rest of the statement, WHERE maybe, is not known
			}
			return closeTo(&open, &n, 0), false
		case sqllex.Punct:
			switch l.Src[t.Start] {
			case ';':
				if atomic == 0 {
					return closeTo(&open, &n, 0), true
				}
			case '(':
				depth++
			case ')':
				if f := closeTo(&open, &n, depth); f.what != refuseNothing {
					return f, false
				}
				depth = max(depth-1, 0)
			}
		case sqllex.Word:
			switch t.End - t.Start {
			case 3:
				if atomic > 0 && l.Is(t, "end") {
					atomic--
				}
			case 4:
				switch {
				case atomic > 0 && l.Is(t, "case"):
					atomic++
				case l.Is(t, "into"):
					if selects && depth == 0 && !l.Is(prev, "insert") && !l.Is(prev, "merge") && !c.intoTemp() && c.ddlDenied() {
						return finding{refuseSelectInto, t}, false
					}
				}
			case 5:
				switch {
				case l.Is(t, "where"):
					if n > 0 && open[n-1].depth == depth {
						open[n-1].where = true
					}
				case creates && atomic == 0 && depth == 0 && l.Is(t, "begin"):
					if la := *l; la.Is(la.Next(), "atomic") {
						atomic = 1 // a function body: its statements run when it is called
					}
				}
			case 6:
				if !requireWhere || atomic > 0 || t != head && !l.IsPunct(prev, '(') && !l.IsPunct(prev, ')') {
					break
				}
				what := c.modifies(t)
				if what == refuseNothing {
					break
				}
				if f := closeTo(&open, &n, depth); f.what != refuseNothing { // one ends where the next begins
					return f, false
				}
				if n < maxOpen {
					open[n] = modifying{what: what, depth: depth}
					n++
				}
			}
		}
	}
}

// closeTo ends the open UPDATE and DELETE statements at depth or deeper,
// innermost first, and returns the refusal of the first without WHERE.
func closeTo(open *[maxOpen]modifying, n *int, depth int) finding {
	for *n > 0 && open[*n-1].depth >= depth {
		*n--
		if !open[*n].where {
			return finding{what: open[*n].what}
		}
	}
	return finding{}
}

// skipPrefix returns the first sqllex.Token of the statement that EXPLAIN [ANALYZE]
// [VERBOSE], EXPLAIN (options) or PREPARE name [(types)] AS introduce, or
// t when there is no such prefix. EXPLAIN's statement is checked as if it
// ran, ANALYZE or not.
func (c *checker) skipPrefix(t sqllex.Token) sqllex.Token {
	l := &c.l
	for {
		switch {
		case l.Is(t, "explain"):
			t = l.Next()
			if l.IsPunct(t, '(') {
				t = skipParens(l)
			}
			for l.Is(t, "analyze") || l.Is(t, "analyse") || l.Is(t, "verbose") {
				t = l.Next()
			}
		case l.Is(t, "prepare"):
			la := *l
			if !sqllex.IsName(la.Next()) {
				return t
			}
			as := la.Next()
			if la.IsPunct(as, '(') {
				as = skipParens(&la)
			}
			if !la.Is(as, "as") {
				return t // PREPARE TRANSACTION 'id', or not SQL
			}
			*l = la
			t = l.Next()
		default:
			return t
		}
	}
}

// skipParens reads up to the parenthesis that closes the one just read and
// returns the sqllex.Token after it (or a semicolon or the end, if first).
func skipParens(l *sqllex.Lexer) sqllex.Token {
	for depth := 1; ; {
		t := l.Next()
		switch {
		case t.Kind == sqllex.EOF || l.IsPunct(t, ';'):
			return t
		case l.IsPunct(t, '('):
			depth++
		case l.IsPunct(t, ')'):
			if depth--; depth == 0 {
				return l.Next()
			}
		}
	}
}

// isDDL reports whether a statement whose first sqllex.Token is t defines or
// changes objects or privileges. Temporary tables, views and sequences,
// which no other session sees, are not DDL here.
func (c *checker) isDDL(t sqllex.Token) bool {
	if !checkDDL || t.Kind != sqllex.Word {
		return false
	}
	l := &c.l
	switch {
	case l.Is(t, "create"):
		la := *l
		n := la.Next()
		if la.Is(n, "or") { // OR REPLACE
			la.Next()
			n = la.Next()
		}
		if la.Is(n, "global") || la.Is(n, "local") {
			n = la.Next()
		}
		return !la.Is(n, "temp") && !la.Is(n, "temporary")
	case l.Is(t, "alter"), l.Is(t, "drop"), l.Is(t, "truncate"), l.Is(t, "comment"), l.Is(t, "grant"),
		l.Is(t, "revoke"), l.Is(t, "security"), l.Is(t, "import"), l.Is(t, "reassign"):
		return true
	}
	return false
}

// intoTemp reports whether the INTO just read, of SELECT ... INTO, creates
// a temporary table: INTO [GLOBAL | LOCAL] {TEMP | TEMPORARY} [TABLE] name,
// or a table in pg_temp. A bare INTO temp names a table called temp.
func (c *checker) intoTemp() bool {
	la := c.l
	t := la.Next()
	if la.Is(t, "global") || la.Is(t, "local") {
		t = la.Next()
	}
	if la.Is(t, "temp") || la.Is(t, "temporary") {
		n := la.Next()
		return n.Kind == sqllex.Quoted || n.Kind == sqllex.Word && !la.Is(n, "from")
	}
	for la.Is(t, "unlogged") || la.Is(t, "table") {
		t = la.Next()
	}
	return la.Is(t, "pg_temp") && la.IsPunct(la.Next(), '.')
}

// modifies returns the refusal for the UPDATE or DELETE statement that
// the word t begins, if it does begin one: DELETE FROM, or UPDATE [ONLY]
// name [*] [[AS] alias] SET. So FOR UPDATE, ON DELETE CASCADE, GRANT
// UPDATE, DO UPDATE SET (of ON CONFLICT) or a column called "update" do
// not count.
func (c *checker) modifies(t sqllex.Token) refusal {
	la := c.l // a copy, to look ahead
	switch {
	case la.Is(t, "delete"):
		if la.Is(la.Next(), "from") {
			return refuseDelete
		}
	case la.Is(t, "update"):
		n := la.Next()
		if la.Is(n, "only") {
			n = la.Next()
		}
		if !sqllex.IsName(n) {
			return refuseNothing
		}
		n = la.Next()
		for la.IsPunct(n, '.') { // schema.table
			if !sqllex.IsName(la.Next()) {
				return refuseNothing
			}
			n = la.Next()
		}
		if la.IsPunct(n, '*') {
			n = la.Next()
		}
		if la.Is(n, "set") {
			return refuseUpdate
		}
		if la.Is(n, "as") {
			n = la.Next()
		}
		if sqllex.IsName(n) && la.Is(la.Next(), "set") {
			return refuseUpdate
		}
	}
	return refuseNothing
}

// ddlDenied reports whether the session's user may not run DDL. It asks
// the host for the user once, and only when a statement is DDL.
func (c *checker) ddlDenied() bool {
	if !checkDDL {
		return false
	}
	if !c.userKnown {
		c.user, c.userKnown = c.s.User(), true
	}
	return ddlUsers[c.user] != ddlAllowList
}

func init() { sdk.Register(guard{}) }

func main() {}
