package proxy_test

import (
	"context"
	"testing"
)

func TestSmokeQueryThroughProxy(t *testing.T) {
	e := newEnv(t, envOptions{pool: "max_connections = 2"})
	c := e.connect(t)
	var n int
	if err := c.QueryRow(context.Background(), "SELECT 1 + $1::int", 41).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 42 {
		t.Fatalf("got %d, want 42", n)
	}
}
