package proxy_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/core/proxy"
)

// Example embeds Sluice in a Go program: parse a configuration, start the
// proxy, and connect through it like to PostgreSQL itself.
func Example() {
	pg, err := pgtest.StartServer(pgtest.Options{}) // a real PostgreSQL for the example
	if err != nil {
		panic(err)
	}
	defer pg.Stop()
	ctx := context.Background()
	if err := pg.CreateRole(ctx, "app", "backend-pw"); err != nil {
		panic(err)
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
    password         = "client-pw"
    backend_password = "backend-pw"
  }
}
`), nil)
	if err != nil {
		panic(err)
	}
	p, err := proxy.New(cfg, zap.NewNop())
	if err != nil {
		panic(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { p.Serve(sctx); close(served) }()
	defer func() { stop(); <-served }()

	conn, err := pgx.Connect(ctx, "postgres://app:client-pw@"+p.Addr("main").String()+"/postgres?sslmode=disable")
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	var user string
	var sum int
	if err := conn.QueryRow(ctx, "SELECT current_user, 40 + 2").Scan(&user, &sum); err != nil {
		panic(err)
	}
	fmt.Println(user, sum)
	// Output: app 42
}
