// Command sluice-dev is what `make run` runs: it starts a local PostgreSQL
// 15 server (data kept under .sluice/ and reused on the next run), creates
// the role and database the repository's proxy.hcl expects, starts the
// sluice binary with that file, prints the psql command that connects
// through it, and stops everything on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/pgtest"
)

const (
	pgPort          = 15432
	appUser         = "app"
	defaultPassword = "app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("sluice", "bin/sluice", "sluice binary")
	cfg := flag.String("config", "proxy.hcl", "configuration file")
	data := flag.String("data", ".sluice", "directory for the local PostgreSQL data")
	flag.Parse()

	for _, v := range []string{"SLUICE_APP_PASSWORD", "SLUICE_APP_BACKEND_PASSWORD"} {
		if os.Getenv(v) == "" {
			os.Setenv(v, defaultPassword)
		}
	}
	dir, err := filepath.Abs(filepath.Join(*data, "pgdata"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	os.Chmod(filepath.Dir(dir), 0o755)
	fmt.Printf("starting PostgreSQL 15 on 127.0.0.1:%d (data in %s)\n", pgPort, dir)
	pg, err := pgtest.StartServer(pgtest.Options{DataDir: dir, Port: pgPort})
	if err != nil {
		return err
	}
	defer pg.Stop()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := ensureRole(ctx, pg, os.Getenv("SLUICE_APP_BACKEND_PASSWORD")); err != nil {
		return err
	}

	cmd := exec.Command(*bin, "run", "--config", *cfg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Printf("\nSluice is running. Connect through it with:\n\n  PGPASSWORD=%s psql \"host=127.0.0.1 port=6432 user=%s dbname=%s\"\n\nPress Ctrl-C to stop.\n\n",
		os.Getenv("SLUICE_APP_PASSWORD"), appUser, appUser)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return fmt.Errorf("sluice exited: %v", err)
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		fmt.Println("stopped")
		return nil
	}
}

// ensureRole creates the role and database proxy.hcl uses, once.
func ensureRole(ctx context.Context, pg *pgtest.Server, password string) error {
	c, err := pgx.Connect(ctx, pg.SuperuserConnString("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", appUser).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if err := pg.CreateRole(ctx, appUser, password); err != nil {
			return err
		}
		if err := pg.CreateDatabase(ctx, appUser, appUser); err != nil {
			return err
		}
		return nil
	}
	_, err = c.Exec(ctx, "ALTER ROLE "+pgx.Identifier{appUser}.Sanitize()+" PASSWORD "+quote(password))
	if err != nil {
		return errors.Join(errors.New("updating the app role's password"), err)
	}
	return nil
}

func quote(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
