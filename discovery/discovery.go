// Package discovery builds the topology sources a configuration asks for
// and hands them to core/proxy, which never imports them: a Consul
// service (discovery/consul), and probing (discovery/probe) of every
// endpoint, whether it comes from hosts, Consul or the writer and replicas
// keys, whenever the cluster has a monitor user.
package discovery

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/core/topology"
	"github.com/sluicedb/sluice/discovery/consul"
	"github.com/sluicedb/sluice/discovery/probe"
)

// Options returns the proxy options that give each cluster of cfg the
// topology source its block asks for. Clusters with a fixed writer and no
// monitor user need none: core/proxy serves their addresses as written.
func Options(cfg *config.Config, log *zap.Logger) ([]proxy.Option, error) {
	var opts []proxy.Option
	for name := range cfg.Clusters {
		src, err := Source(cfg, name, log.With(zap.String("cluster", name)))
		if err != nil {
			return nil, err
		}
		if src != nil {
			opts = append(opts, proxy.WithTopology(name, src))
		}
	}
	if cfg.Admin.Register != nil {
		r, err := Registrar(cfg, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, proxy.WithHook(r))
	}
	return opts, nil
}

// Registrar returns the hook that registers this Sluice in Consul as the
// admin block's register block says. Its agent is the register block's
// consul address, else that of the first cluster (by name) with a consul
// block, with its token, else config.DefaultConsulAddress.
func Registrar(cfg *config.Config, log *zap.Logger) (*consul.Registrar, error) {
	reg := cfg.Admin.Register
	addr, token := reg.Consul, reg.Token
	var tls *config.ConsulTLS
	if addr == "" {
		for _, name := range slices.Sorted(maps.Keys(cfg.Clusters)) {
			if k := cfg.Clusters[name].Consul; k != nil {
				addr, tls = k.Address, k.TLS
				if token == "" {
					token = k.Token
				}
				break
			}
		}
	}
	client, err := ConsulClient(addr, token, "", tls)
	if err != nil {
		return nil, fmt.Errorf("admin.register: %w", err)
	}
	service := reg.Service
	if service == "" {
		service = "sluice"
	}
	return &consul.Registrar{
		Client: client, Service: service, Tags: reg.Tags, Address: reg.Address,
		CheckInterval: reg.CheckInterval, Log: log.With(zap.String("component", "register")),
	}, nil
}

// Source returns the topology source of the named cluster, or nil when
// its block's fixed addresses are all there is.
func Source(cfg *config.Config, name string, log *zap.Logger) (topology.Source, error) {
	cl := cfg.Clusters[name]
	var discover topology.Source
	switch {
	case cl.Consul != nil:
		client, err := ConsulClient(cl.Consul.Address, cl.Consul.Token, cl.Consul.Datacenter, cl.Consul.TLS)
		if err != nil {
			return nil, fmt.Errorf("cluster %q.consul: %w", name, err)
		}
		discover = &consul.Source{
			Client: client, Service: cl.Consul.Service,
			WriterTag: cl.Consul.WriterTag, ReplicaTag: cl.Consul.ReplicaTag,
			Datacenter: cl.Consul.Datacenter, Log: log,
		}
	case len(cl.Hosts) == 0:
		discover = topology.Fixed{Writer: cl.Writer, Replicas: cl.Replicas}
	}
	if !cl.Probed() {
		if cl.Consul == nil {
			if cl.MaxReplicaLag == 0 {
				log.Info("no monitor_user: the writer and replicas are taken as configured, without fencing or lag checks")
			}
			return nil, nil
		}
		log.Info("no monitor_user: Consul's word is taken without probing (no fencing, no lag checks)")
		return discover, nil
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
	promo := probe.ByProbe
	if cl.PromotionMode() == config.PromotionDiscovery {
		promo = probe.ByDiscovery
	}
	return &probe.Source{
		Hosts:       cl.Hosts,
		Discover:    discover,
		Promotion:   promo,
		MaxLag:      cl.MaxReplicaLag,
		MaxLagBytes: int64(cl.MaxReplicaLagBytes),
		Endpoint: pool.Endpoint{
			Name: fmt.Sprintf("cluster %q (probe)", name), Database: "postgres",
			User: cl.MonitorUser, Password: pw, TLS: tls,
			ConnectTimeout: cfg.Pool.ConnectTimeout,
		},
		Interval: cl.HealthCheckInterval,
		Log:      log,
	}, nil
}

// ConsulClient returns a Consul API client for an agent address (host:port
// or an http or https URL; empty means config.DefaultConsulAddress), a
// token reference (env:NAME, file:PATH or the token itself) and TLS
// settings.
func ConsulClient(address, token, datacenter string, tls *config.ConsulTLS) (*api.Client, error) {
	c := api.DefaultNonPooledConfig()
	c.Address, c.Scheme = config.DefaultConsulAddress, "http"
	if address != "" {
		c.Address = address
	}
	if rest, ok := strings.CutPrefix(c.Address, "https://"); ok {
		c.Address, c.Scheme = rest, "https"
	} else if rest, ok := strings.CutPrefix(c.Address, "http://"); ok {
		c.Address = rest
	}
	c.Address = strings.TrimSuffix(c.Address, "/")
	c.Datacenter = datacenter
	if token != "" {
		t, err := auth.ResolveReference(token, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		c.Token = t
	}
	if tls != nil {
		if c.Scheme == "http" {
			c.Scheme = "https"
		}
		c.TLSConfig = api.TLSConfig{
			CAFile: tls.CAFile, CertFile: tls.CertFile, KeyFile: tls.KeyFile,
			Address: tls.ServerName, InsecureSkipVerify: tls.InsecureSkipVerify,
		}
	}
	return api.NewClient(c)
}
