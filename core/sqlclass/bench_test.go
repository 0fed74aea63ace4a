package sqlclass

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// pgbenchSelect is the statement of pgbench -S (select-only).
const pgbenchSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"

// longSelect is a 2 KB statement of the kind ORMs generate: many quoted
// columns, joins, strings, a comment and parameters.
var longSelect = func() string {
	var b strings.Builder
	b.WriteString("/* controller:orders action:index */ SELECT ")
	for i := 0; b.Len() < 1500; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`"orders"."column_`)
		b.WriteByte(byte('a' + i%26))
		b.WriteString(`" AS "t0_r`)
		b.WriteByte(byte('a' + i%26))
		b.WriteByte('"')
	}
	b.WriteString(` FROM "orders" LEFT OUTER JOIN "customers" ON "customers"."id" = "orders"."customer_id"` +
		` LEFT OUTER JOIN "addresses" ON "addresses"."customer_id" = "customers"."id"` +
		` WHERE "orders"."state" IN ('open', 'paid', 'it''s shipped') AND "orders"."created_at" > $1` +
		` AND "customers"."email" LIKE $2 ESCAPE '\' AND coalesce("orders"."note", '') <> $$n/a$$`)
	for b.Len() < 2048-40 {
		b.WriteString(` AND "orders"."id" <> 42`)
	}
	b.WriteString(` ORDER BY "orders"."id" DESC LIMIT $3`)
	return b.String()
}()

const setStatement = "SET search_path TO tenant_42, public"

func benchmarkClassify(b *testing.B, sql string) {
	b.ReportAllocs()
	b.SetBytes(int64(len(sql)))
	dst := Classify(nil, sql)
	b.ResetTimer()
	for b.Loop() {
		dst = Classify(dst[:0], sql)
	}
}

func BenchmarkClassifySelect(b *testing.B) { benchmarkClassify(b, pgbenchSelect) }

func BenchmarkClassifyLong(b *testing.B) {
	if len(longSelect) < 2000 || len(longSelect) > 2100 {
		b.Fatalf("longSelect is %d bytes, want about 2 KB", len(longSelect))
	}
	benchmarkClassify(b, longSelect)
}

func BenchmarkClassifySet(b *testing.B) { benchmarkClassify(b, setStatement) }

func BenchmarkClassifyTransaction(b *testing.B) {
	benchmarkClassify(b, "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + -4213 WHERE aid = 77311; "+
		"SELECT abalance FROM pgbench_accounts WHERE aid = 77311; END;")
}

// Statements at the sizes a client can send: the classifier is used on
// statements up to PostgreSQL's message limit, so its cost per byte must
// not grow with the statement.
const (
	size60K = 60 << 10
	size1M  = 1 << 20
)

// inListSelect returns an ORM-style SELECT ... WHERE id IN (1, 2, ..., N)
// of about size bytes.
func inListSelect(size int) string {
	var b strings.Builder
	b.Grow(size + 32)
	b.WriteString(`SELECT "orders"."id", "orders"."state" FROM "orders" WHERE "orders"."id" IN (1`)
	for i := 2; ; i++ {
		n := strconv.Itoa(i)
		if b.Len()+len(", ")+len(n)+len(")") > size {
			break
		}
		b.WriteString(", ")
		b.WriteString(n)
	}
	b.WriteByte(')')
	return b.String()
}

// longLiteralInsert returns an INSERT whose one string literal, with a
// doubled quote now and then, makes it about size bytes.
func longLiteralInsert(size int) string {
	const head, tail = "INSERT INTO documents (id, body) VALUES (42, '", "') RETURNING id"
	var b strings.Builder
	b.Grow(size + 64)
	b.WriteString(head)
	for b.Len() < size-len(tail)-64 {
		b.WriteString("Lorem ipsum dolor sit amet, it''s consectetur adipiscing elit. ")
	}
	b.WriteString(tail)
	return b.String()
}

// manyStatements returns a simple query of many short statements, about
// size bytes, as a client batching inserts sends.
func manyStatements(size int) string {
	var b strings.Builder
	b.Grow(size + 64)
	for i := 0; b.Len() < size-64; i++ {
		b.WriteString("INSERT INTO events (id, kind) VALUES (")
		b.WriteString(strconv.Itoa(i))
		b.WriteString(", 'click');")
	}
	return b.String()
}

// benchmarkLarge is benchmarkClassify for a statement that must be about
// size bytes.
func benchmarkLarge(b *testing.B, sql string, size int) {
	if len(sql) < size*95/100 || len(sql) > size {
		b.Fatalf("statement is %d bytes, want about %d", len(sql), size)
	}
	benchmarkClassify(b, sql)
}

func BenchmarkClassifyInList60K(b *testing.B) {
	benchmarkLarge(b, inListSelect(size60K), size60K)
}

func BenchmarkClassifyLongString60K(b *testing.B) {
	benchmarkLarge(b, longLiteralInsert(size60K), size60K)
}

func BenchmarkClassifyMultiStatement60K(b *testing.B) {
	benchmarkLarge(b, manyStatements(size60K), size60K)
}

func BenchmarkClassifyInList1M(b *testing.B) {
	benchmarkLarge(b, inListSelect(size1M), size1M)
}

func TestLongSelect(t *testing.T) {
	got := Classify(nil, longSelect)
	want := []Statement{ro("SELECT")}
	if len(longSelect) < 2000 || !reflect.DeepEqual(got, want) {
		t.Fatalf("len %d, got %s", len(longSelect), format(got))
	}
}

// TestLargeInList checks that a 1 MiB IN list classifies as a short one.
func TestLargeInList(t *testing.T) {
	short, long := inListSelect(100), inListSelect(size1M)
	want := ClassifyOne(short)
	if !reflect.DeepEqual(want, ro("SELECT")) {
		t.Fatalf("ClassifyOne(%q) = %s", short, format([]Statement{want}))
	}
	if got := ClassifyOne(long); !reflect.DeepEqual(got, want) {
		t.Errorf("ClassifyOne of %d bytes = %s, want %s", len(long), format([]Statement{got}), format([]Statement{want}))
	}
	if got := Classify(nil, long+";"); !reflect.DeepEqual(got, []Statement{want}) {
		t.Errorf("Classify of %d bytes = %s, want %s", len(long), format(got), format([]Statement{want}))
	}
}

// TestLongSetValue checks that a SET value far longer than a usual
// statement is reported whole.
func TestLongSetValue(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 20<<10; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("tenant_" + strconv.Itoa(i))
	}
	value := "'" + b.String() + "'"
	sql := "SET search_path = " + value
	want := rw("SET", setp("search_path", value))
	if got := ClassifyOne(sql); !reflect.DeepEqual(got, want) {
		t.Fatalf("ClassifyOne of a %d-byte SET = %.200s, want the %d-byte value", len(sql), format([]Statement{got}), len(value))
	}
}

// TestEffectAtEndOfLongQuery checks that a session-state effect after 60 KB
// of other statements is found.
func TestEffectAtEndOfLongQuery(t *testing.T) {
	n := size60K / len("SELECT 1;")
	sql := strings.Repeat("SELECT 1;", n) + "LISTEN x"
	got := Classify(nil, sql)
	if len(got) != n+1 {
		t.Fatalf("Classify found %d statements, want %d", len(got), n+1)
	}
	if want := rw("LISTEN", pin(ReasonListen)); !reflect.DeepEqual(got[n], want) {
		t.Errorf("last statement = %s, want %s", format(got[n:]), format([]Statement{want}))
	}
	for i, st := range got[:n] {
		if !reflect.DeepEqual(st, ro("SELECT")) {
			t.Fatalf("statement %d = %s, want a read-only SELECT", i, format([]Statement{st}))
		}
	}
}
