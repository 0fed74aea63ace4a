package sqlclass

import (
	"reflect"
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

func TestLongSelect(t *testing.T) {
	got := Classify(nil, longSelect)
	want := []Statement{ro("SELECT")}
	if len(longSelect) < 2000 || !reflect.DeepEqual(got, want) {
		t.Fatalf("len %d, got %s", len(longSelect), format(got))
	}
}
