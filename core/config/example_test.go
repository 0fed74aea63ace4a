package config_test

import (
	"fmt"

	"github.com/sluicedb/sluice/core/config"
)

func ExampleParse() {
	src := []byte(`
listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
}
pool {
  mode            = "transaction"
  max_connections = 20
}
cluster "main" {
  writer = "127.0.0.1:15432"
}
auth {
  user "app" {
    password = "env:SLUICE_APP_PASSWORD"
  }
}
`)
	// Overrides come from the environment, usually os.Environ().
	environ := []string{"SLUICE_POOL__MAX_CONNECTIONS=50"}

	cfg, err := config.Parse(src, environ)
	if err != nil {
		fmt.Println(err)
		return
	}
	l := cfg.Listeners[0]
	fmt.Println(l.Name, l.Address, "->", cfg.Clusters[l.Cluster].Writer)
	fmt.Println("max_connections:", cfg.Pool.MaxConnections, "borrow_timeout:", cfg.Pool.BorrowTimeout)
	fmt.Println("backend user of app:", cfg.Auth.Users["app"].BackendUser)

	_, err = config.Parse(src, []string{"SLUICE_POOL__MAX_CONECTIONS=50"})
	fmt.Println(err)
	// Output:
	// main 127.0.0.1:6432 -> 127.0.0.1:15432
	// max_connections: 50 borrow_timeout: 2m0s
	// backend user of app: app
	// SLUICE_POOL__MAX_CONECTIONS: unknown key "pool.max_conections", did you mean "max_connections"?
}
