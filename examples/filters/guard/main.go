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
	c := checker{l: lexer{src: st.SQL}, s: s, truncated: st.Truncated}
	switch f := c.run(); f.what {
	case refuseDDL:
		sdk.Count("refused_ddl", 1)
		return sdk.Reject(codeInsufficientPrivilege, "guard: DDL ("+strings.ToUpper(st.SQL[f.at.start:f.at.end])+
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

// finding is a refusal and the token it is about.
type finding struct {
	what refusal
	at   token
}

// checker reads the statements of one text in turn.
type checker struct {
	l         lexer
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
	t := c.skipPrefix(l.next())
	head := t
	if c.isDDL(head) && c.ddlDenied() {
		return finding{refuseDDL, head}, true
	}
	selects := l.is(head, "select") || l.is(head, "with") || l.punct(head, '(') // may be SELECT ... INTO
	creates := l.is(head, "create")                                             // may have a BEGIN ATOMIC body
	var open [maxOpen]modifying
	n, depth, atomic := 0, 0, 0
	prev := token{kind: tokEOF}
	// A switch on the kind, then on one byte or the length, keeps the
	// branches per token few: they are what a token costs in the host.
	for ; ; prev, t = t, l.next() {
		switch t.kind {
		case tokEOF:
			if c.truncated {
				n = 0 // the rest of the statement, WHERE maybe, is not known
			}
			return closeTo(&open, &n, 0), false
		case tokPunct:
			switch l.src[t.start] {
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
		case tokWord:
			switch t.end - t.start {
			case 3:
				if atomic > 0 && l.is(t, "end") {
					atomic--
				}
			case 4:
				switch {
				case atomic > 0 && l.is(t, "case"):
					atomic++
				case l.is(t, "into"):
					if selects && depth == 0 && !l.is(prev, "insert") && !l.is(prev, "merge") && !c.intoTemp() && c.ddlDenied() {
						return finding{refuseSelectInto, t}, false
					}
				}
			case 5:
				switch {
				case l.is(t, "where"):
					if n > 0 && open[n-1].depth == depth {
						open[n-1].where = true
					}
				case creates && atomic == 0 && depth == 0 && l.is(t, "begin"):
					if la := *l; la.is(la.next(), "atomic") {
						atomic = 1 // a function body: its statements run when it is called
					}
				}
			case 6:
				if !requireWhere || atomic > 0 || t != head && !l.punct(prev, '(') && !l.punct(prev, ')') {
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

// skipPrefix returns the first token of the statement that EXPLAIN [ANALYZE]
// [VERBOSE], EXPLAIN (options) or PREPARE name [(types)] AS introduce, or
// t when there is no such prefix. EXPLAIN's statement is checked as if it
// ran, ANALYZE or not.
func (c *checker) skipPrefix(t token) token {
	l := &c.l
	for {
		switch {
		case l.is(t, "explain"):
			t = l.next()
			if l.punct(t, '(') {
				t = skipParens(l)
			}
			for l.is(t, "analyze") || l.is(t, "analyse") || l.is(t, "verbose") {
				t = l.next()
			}
		case l.is(t, "prepare"):
			la := *l
			if !isName(la.next()) {
				return t
			}
			as := la.next()
			if la.punct(as, '(') {
				as = skipParens(&la)
			}
			if !la.is(as, "as") {
				return t // PREPARE TRANSACTION 'id', or not SQL
			}
			*l = la
			t = l.next()
		default:
			return t
		}
	}
}

// skipParens reads up to the parenthesis that closes the one just read and
// returns the token after it (or a semicolon or the end, if first).
func skipParens(l *lexer) token {
	for depth := 1; ; {
		t := l.next()
		switch {
		case t.kind == tokEOF || l.punct(t, ';'):
			return t
		case l.punct(t, '('):
			depth++
		case l.punct(t, ')'):
			if depth--; depth == 0 {
				return l.next()
			}
		}
	}
}

// isDDL reports whether a statement whose first token is t defines or
// changes objects or privileges. Temporary tables, views and sequences,
// which no other session sees, are not DDL here.
func (c *checker) isDDL(t token) bool {
	if !checkDDL || t.kind != tokWord {
		return false
	}
	l := &c.l
	switch {
	case l.is(t, "create"):
		la := *l
		n := la.next()
		if la.is(n, "or") { // OR REPLACE
			la.next()
			n = la.next()
		}
		if la.is(n, "global") || la.is(n, "local") {
			n = la.next()
		}
		return !la.is(n, "temp") && !la.is(n, "temporary")
	case l.is(t, "alter"), l.is(t, "drop"), l.is(t, "truncate"), l.is(t, "comment"), l.is(t, "grant"),
		l.is(t, "revoke"), l.is(t, "security"), l.is(t, "import"), l.is(t, "reassign"):
		return true
	}
	return false
}

// intoTemp reports whether the INTO just read, of SELECT ... INTO, creates
// a temporary table: INTO [GLOBAL | LOCAL] {TEMP | TEMPORARY} [TABLE] name,
// or a table in pg_temp. A bare INTO temp names a table called temp.
func (c *checker) intoTemp() bool {
	la := c.l
	t := la.next()
	if la.is(t, "global") || la.is(t, "local") {
		t = la.next()
	}
	if la.is(t, "temp") || la.is(t, "temporary") {
		n := la.next()
		return n.kind == tokQuoted || n.kind == tokWord && !la.is(n, "from")
	}
	for la.is(t, "unlogged") || la.is(t, "table") {
		t = la.next()
	}
	return la.is(t, "pg_temp") && la.punct(la.next(), '.')
}

// modifies returns the refusal for the UPDATE or DELETE statement that
// the word t begins, if it does begin one: DELETE FROM, or UPDATE [ONLY]
// name [*] [[AS] alias] SET. So FOR UPDATE, ON DELETE CASCADE, GRANT
// UPDATE, DO UPDATE SET (of ON CONFLICT) or a column called "update" do
// not count.
func (c *checker) modifies(t token) refusal {
	la := c.l // a copy, to look ahead
	switch {
	case la.is(t, "delete"):
		if la.is(la.next(), "from") {
			return refuseDelete
		}
	case la.is(t, "update"):
		n := la.next()
		if la.is(n, "only") {
			n = la.next()
		}
		if !isName(n) {
			return refuseNothing
		}
		n = la.next()
		for la.punct(n, '.') { // schema.table
			if !isName(la.next()) {
				return refuseNothing
			}
			n = la.next()
		}
		if la.punct(n, '*') {
			n = la.next()
		}
		if la.is(n, "set") {
			return refuseUpdate
		}
		if la.is(n, "as") {
			n = la.next()
		}
		if isName(n) && la.is(la.next(), "set") {
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
