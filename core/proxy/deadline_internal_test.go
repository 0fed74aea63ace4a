package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
)

// TestStartupDeadlineEndsWithLogin: the deadline that bounds a client's
// startup and authentication must not cut off the session that follows.
func TestStartupDeadlineEndsWithLogin(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := pg.CreateRole(ctx, "app", "pw"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`
listen "main" {
  address = "127.0.0.1:0"
  cluster = "main"
}
cluster "main" {
  writer = "`+pg.Addr()+`"
}
auth {
  user "app" {
    password         = "pw"
    backend_password = "pw"
  }
}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	p.startupTimeout = 300 * time.Millisecond
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { p.Serve(sctx); close(served) }()
	defer func() { stop(); <-served }()

	c, err := pgx.Connect(ctx, "postgres://app:pw@"+p.Addr("main").String()+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	time.Sleep(600 * time.Millisecond) // idle past the startup deadline
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("session cut off after the startup deadline: %v", err)
	}
}
