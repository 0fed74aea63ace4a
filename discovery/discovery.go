// Package discovery builds the topology sources a configuration asks for
// and hands them to core/proxy, which never imports them: the probing
// source (cluster hosts) here, Consul next.
package discovery

import (
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/discovery/probe"
)

// Options returns the proxy options that give each cluster of cfg the
// topology source its block asks for. Clusters with a fixed writer need
// none.
func Options(cfg *config.Config, log *zap.Logger) ([]proxy.Option, error) {
	var opts []proxy.Option
	for name, cl := range cfg.Clusters {
		if len(cl.Hosts) == 0 {
			continue
		}
		pw := ""
		if cl.MonitorPassword != "" {
			var err error
			if pw, err = auth.ResolveReference(cl.MonitorPassword, os.Getenv); err != nil {
				return nil, fmt.Errorf("cluster %q.monitor_password: %w", name, err)
			}
		}
		tls, err := proxy.ServerTLS(cl)
		if err != nil {
			return nil, fmt.Errorf("cluster %q.tls: %w", name, err)
		}
		src := &probe.Source{
			Hosts: cl.Hosts,
			Endpoint: pool.Endpoint{
				Name: fmt.Sprintf("cluster %q (probe)", name), Database: "postgres",
				User: cl.MonitorUser, Password: pw, TLS: tls,
				ConnectTimeout: cfg.Pool.ConnectTimeout,
			},
			Interval: cl.HealthCheckInterval,
			Log:      log.With(zap.String("cluster", name)),
		}
		opts = append(opts, proxy.WithTopology(name, src))
	}
	return opts, nil
}
