// Command sluice-dev is what `make run` and `make run-consul` run: it starts
// a local PostgreSQL 15 primary and one streaming replica of it (data kept
// under .sluice/ and reused on the next run), creates the roles and database
// the repository's configurations expect, starts the sluice binary with one
// of them, prints the psql commands that connect through each of its
// listeners, and stops everything on Ctrl-C.
//
// With -consul it also starts a single-node Consul agent (bin/consul, data
// under .sluice/consul) on ports 18300-18600 (Consul's defaults plus 10000),
// registers the primary (tag primary) and the replica (tag replica) as
// service postgres-main, and prints the agent's UI and the request that
// lists Sluice's own registration; examples/proxy-consul.hcl reads the
// cluster from there.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pgtest"
	"github.com/sluicedb/sluice/discovery/consultest"
)

const (
	primaryPort = 15432
	replicaPort = 15433
	appUser     = "app"
	monitorUser = "sluice_monitor"
	// pgService is the Consul service the servers are registered as; it
	// is the one examples/proxy-consul.hcl names.
	pgService = "postgres-main"
	// readyTimeout bounds the wait for Sluice's listeners to accept.
	readyTimeout = 30 * time.Second
)

// consulPorts are Consul's default ports plus 10000, so that an agent of
// the machine's own on the defaults is left alone; all are below the
// ephemeral port range.
var consulPorts = consultest.Ports{HTTP: 18500, DNS: 18600, SerfLAN: 18301, SerfWAN: 18302, Server: 18300, GRPC: 18502}

// passwords are the environment variables the configurations read with
// env:, and the values used when they are not set.
var passwords = []struct{ env, fallback string }{
	{"SLUICE_APP_PASSWORD", "app"},
	{"SLUICE_APP_BACKEND_PASSWORD", "app"},
	{"SLUICE_MONITOR_PASSWORD", "monitor"},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("sluice", "bin/sluice", "sluice binary")
	cfgPath := flag.String("config", "proxy.hcl", "configuration file")
	data := flag.String("data", ".sluice", "directory for the local PostgreSQL (and Consul) data")
	withConsul := flag.Bool("consul", false, "also start a Consul agent and register the servers in it")
	flag.Parse()

	for _, p := range passwords {
		if os.Getenv(p.env) == "" {
			os.Setenv(p.env, p.fallback)
		}
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return fmt.Errorf("%s: %w", *cfgPath, err)
	}
	root, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	// PostgreSQL runs as another user when this runs as root.
	os.Chmod(root, 0o755)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	primaryDir := filepath.Join(root, "pgdata")
	fmt.Printf("starting PostgreSQL 15 on 127.0.0.1:%d (data in %s)\n", primaryPort, primaryDir)
	pg, err := pgtest.StartServer(pgtest.Options{
		DataDir: primaryDir,
		Port:    primaryPort,
		// WAL the replica has not received when it stops is kept for its
		// next start (up to this much), without a replication slot that
		// would keep it forever once the replica is gone.
		Settings: map[string]string{"wal_keep_size": "256MB"},
	})
	if err != nil {
		return err
	}
	defer pg.Stop()
	if err := ensureRoles(ctx, pg); err != nil {
		return err
	}

	replicaDir := filepath.Join(root, "replica")
	fmt.Printf("starting its streaming replica on 127.0.0.1:%d (data in %s)\n", replicaPort, replicaDir)
	began := time.Now()
	replica, err := pg.StartReplicaAt(replicaDir, replicaPort)
	if err != nil {
		return err
	}
	defer replica.Stop()
	fmt.Printf("replica streaming after %v\n", time.Since(began).Round(time.Millisecond))

	var agent *consultest.Agent
	if *withConsul {
		dir := filepath.Join(root, "consul")
		fmt.Printf("starting Consul on 127.0.0.1:%d (data in %s)\n", consulPorts.HTTP, dir)
		agent, err = consultest.StartAgent(consultest.Options{Dir: dir, NodeName: "sluice-dev", Ports: consulPorts, UI: true})
		if err != nil {
			return err
		}
		defer agent.Stop()
		if err := registerServers(agent, pg, replica); err != nil {
			return err
		}
	}

	cmd := exec.Command(*bin, "run", "--config", *cfgPath)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Stop Sluice before the servers, so that it deregisters from Consul
	// and its clients see a clean shutdown.
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
	}()
	if err := waitListening(ctx, cfg, exited); err != nil {
		return err
	}
	printUsage(cfg, agent)

	select {
	case err := <-exited:
		exited <- err // for the deferred stop
		return fmt.Errorf("sluice exited: %v", err)
	case <-ctx.Done():
		fmt.Println("stopping")
		return nil
	}
}

// ensureRoles creates, once, the role and database the configurations
// send clients to and the monitor role Sluice probes the servers with (it
// needs no privilege: pg_is_in_recovery() and the WAL positions are
// public), and sets their passwords from the environment on every run.
func ensureRoles(ctx context.Context, pg *pgtest.Server) error {
	c, err := pgx.Connect(ctx, pg.SuperuserConnString("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, r := range []struct{ name, password string }{
		{appUser, os.Getenv("SLUICE_APP_BACKEND_PASSWORD")},
		{monitorUser, os.Getenv("SLUICE_MONITOR_PASSWORD")},
	} {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", r.name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if err := pg.CreateRole(ctx, r.name, r.password); err != nil {
				return err
			}
			continue
		}
		_, err = c.Exec(ctx, "ALTER ROLE "+pgx.Identifier{r.name}.Sanitize()+" PASSWORD "+quote(r.password))
		if err != nil {
			return errors.Join(fmt.Errorf("updating the password of role %s", r.name), err)
		}
	}
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)", appUser).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return pg.CreateDatabase(ctx, appUser, appUser)
	}
	return nil
}

// registerServers registers the primary and the replica as pgService, and
// removes any other instance of it a previous run left on the agent.
func registerServers(agent *consultest.Agent, primary, replica *pgtest.Server) error {
	ids := map[string]bool{}
	for _, s := range []struct {
		srv *pgtest.Server
		tag string
	}{{primary, "primary"}, {replica, "replica"}} {
		id := fmt.Sprintf("%s-%d", pgService, s.srv.Port())
		ids[id] = true
		if err := agent.RegisterService(id, pgService, pgtest.Host, s.srv.Port(), []string{s.tag}, nil); err != nil {
			return err
		}
	}
	c, err := agent.NewClient()
	if err != nil {
		return err
	}
	services, err := c.Agent().Services()
	if err != nil {
		return fmt.Errorf("listing the agent's services: %w", err)
	}
	for id, s := range services {
		if s.Service == pgService && !ids[id] {
			if err := agent.DeregisterService(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitListening waits until every listener of cfg accepts TCP connections,
// Sluice exits or ctx ends.
func waitListening(ctx context.Context, cfg *config.Config, exited chan error) error {
	deadline := time.Now().Add(readyTimeout)
	for _, l := range cfg.Listeners {
		for {
			c, err := net.DialTimeout("tcp", l.Address, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("sluice's listener %q does not accept on %s after %v: %w", l.Name, l.Address, readyTimeout, err)
			}
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("sluice exited: %v", err)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// printUsage prints how to connect through each listener and, with Consul,
// where its UI is and how to see Sluice's registration.
func printUsage(cfg *config.Config, agent *consultest.Agent) {
	var b strings.Builder
	b.WriteString("\nSluice is running. Connect through it with:\n\n")
	password := os.Getenv("SLUICE_APP_PASSWORD")
	for _, l := range cfg.Listeners {
		host, port, _ := net.SplitHostPort(l.Address)
		what := "the writer (the primary)"
		if l.Role == config.RoleReader {
			what = "the reader endpoint (the replicas)"
		}
		fmt.Fprintf(&b, "  # %s\n  PGPASSWORD=%s psql \"host=%s port=%s user=%s dbname=%s\"\n\n", what, password, host, port, appUser, appUser)
	}
	if agent != nil {
		fmt.Fprintf(&b, "Consul: UI http://%s/ui/, API http://%s/v1/\n", agent.Addr(), agent.Addr())
		fmt.Fprintf(&b, "  # the servers Sluice reads the cluster from\n  curl -s 'http://%s/v1/health/service/%s?passing'\n", agent.Addr(), pgService)
		if reg := cfg.Admin.Register; reg != nil {
			service := reg.Service
			if service == "" {
				service = "sluice"
			}
			fmt.Fprintf(&b, "  # Sluice's own registration, one instance per listener (passing once Consul has checked /healthz)\n  curl -s 'http://%s/v1/health/service/%s?passing'\n", agent.Addr(), service)
		}
		b.WriteString("\n")
	}
	if cfg.Admin.Address != "" {
		fmt.Fprintf(&b, "Admin: curl -s http://%s/pools\n\n", cfg.Admin.Address)
	}
	b.WriteString("Press Ctrl-C to stop.\n\n")
	fmt.Print(b.String())
}

func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
