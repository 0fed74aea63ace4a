// Command sluice runs the Sluice PostgreSQL connection proxy.
//
//	sluice run --config proxy.hcl     serve until SIGTERM/SIGINT; SIGHUP reloads (filters too;
//	                                  a changed filter module is reloaded on its own)
//	sluice check --config proxy.hcl   validate a configuration file
//	sluice version                    print the version
//	sluice filter build [-o OUT] DIR  compile the Go filter in DIR to WebAssembly
//	sluice filter test --module F --sql FILE [...]
//	                                  print a filter's decision for each statement of FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/discovery"
	"github.com/sluicedb/sluice/filters"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: sluice run|check|version [--config proxy.hcl] | sluice filter build|test ...")
		return 2
	}
	if args[0] == "filter" {
		return runFilter(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("sluice "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "proxy.hcl", "configuration file")
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "sluice %s\n", version)
		return 0
	case "check", "run":
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q (want run, check, version or filter)\n", args[0])
		return 2
	}
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "sluice: %s: %v\n", *path, err)
		return 1
	}
	if args[0] == "check" {
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return 0
	}
	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg.Log, level)
	if err != nil {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	defer log.Sync()
	opts, err := discovery.Options(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	fopts, err := filters.Options(context.Background(), cfg, log)
	if err != nil {
		log.Error("cannot start: a filter did not load", zap.Error(err))
		return 1
	}
	p, err := proxy.New(cfg, log, append(opts, fopts...)...)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			next, err := config.Load(*path, os.Environ())
			if err == nil {
				err = p.Reload(next)
			} else {
				p.ReloadFailed() // Reload counts the others
			}
			if err != nil {
				log.Error("reload rejected; keeping the running configuration", zap.Error(err))
				continue
			}
			if l, err := zapcore.ParseLevel(next.Log.Level); err == nil {
				level.SetLevel(l)
			}
		}
	}()
	for _, l := range cfg.Listeners {
		log.Info("listening", zap.String("listener", l.Name), zap.Stringer("address", p.Addr(l.Name)))
	}
	if err := p.Serve(ctx); err != nil {
		log.Error("serve failed", zap.Error(err))
		return 1
	}
	log.Info("stopped")
	return 0
}

// newLogger builds the process logger from the log block.
func newLogger(c config.Log, level zap.AtomicLevel) (*zap.Logger, error) {
	l, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	level.SetLevel(l)
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = level
	zc.Sampling = nil
	return zc.Build()
}
