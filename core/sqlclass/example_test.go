package sqlclass_test

import (
	"fmt"

	"github.com/sluicedb/sluice/core/sqlclass"
)

func ExampleClassify() {
	sql := `SET search_path TO app, public;
		SELECT * FROM users WHERE name = 'a;b';
		SELECT pg_advisory_lock(42);
		LISTEN jobs`
	for _, st := range sqlclass.Classify(nil, sql) {
		fmt.Println(st.Command, st.ReadOnly, st.Effects)
	}
	// Output:
	// SET false [SET search_path = app, public]
	// SELECT true []
	// SELECT false [Pin session-level advisory lock]
	// LISTEN false [Pin LISTEN]
}

func ExampleClassifyOne() {
	st := sqlclass.ClassifyOne("CREATE TEMP TABLE scratch (id int) ON COMMIT DROP")
	fmt.Println(st.Command, st.Effects == nil)
	st = sqlclass.ClassifyOne("CREATE TEMP TABLE scratch (id int)")
	for _, e := range st.Effects {
		fmt.Println(e.Kind, e.Reason)
	}
	// Output:
	// CREATE TEMP TABLE true
	// Pin temporary table, view or sequence
}

func ExampleSplit() {
	sql := "SELECT 'a;b';\n-- then\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql"
	for _, sp := range sqlclass.Split(nil, sql) {
		fmt.Printf("%d-%d %q\n", sp.Start, sp.End, sql[sp.Start:sp.End])
	}
	// Output:
	// 0-12 "SELECT 'a;b'"
	// 13-85 "\n-- then\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql"
}
