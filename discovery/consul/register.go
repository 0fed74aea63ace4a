package consul

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/proxy"
)

// Registrar announces a Sluice in Consul: each listener is an instance of
// Service, tagged with its role, whose health check is the admin
// endpoint's /healthz; it is a proxy.Hook, so it registers when the proxy
// serves and deregisters when it begins to shut down. While Consul cannot
// be reached it retries with back-off.
type Registrar struct {
	Client  *api.Client
	Service string
	Tags    []string
	// Address is advertised for listeners on a wildcard address; empty
	// lets the agent use its node's address.
	Address string
	// CheckInterval is how often Consul calls /healthz.
	CheckInterval time.Duration
	Log           *zap.Logger

	mu     sync.Mutex
	ids    []string
	cancel context.CancelFunc
	done   chan struct{}
}

// DefaultCheckInterval is CheckInterval's default.
const DefaultCheckInterval = 2 * time.Second

// Start implements proxy.Hook.
func (r *Registrar) Start(p *proxy.Proxy) error {
	admin := p.AdminAddr()
	if admin == nil {
		return fmt.Errorf("consul registration needs the admin address: its /healthz is the check")
	}
	regs := r.registrations(p.Listeners(), admin)
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.cancel, r.done = cancel, make(chan struct{})
	for _, reg := range regs {
		r.ids = append(r.ids, reg.ID)
	}
	r.mu.Unlock()
	go r.register(ctx, regs)
	return nil
}

// registrations builds one registration per listener.
func (r *Registrar) registrations(ls []proxy.ListenerInfo, admin net.Addr) []*api.AgentServiceRegistration {
	host, _ := os.Hostname()
	interval := r.CheckInterval
	if interval <= 0 {
		interval = DefaultCheckInterval
	}
	check := "http://" + reachable(admin) + "/healthz"
	var out []*api.AgentServiceRegistration
	for _, l := range ls {
		h, port, _ := net.SplitHostPort(l.Addr.String())
		n, _ := strconv.Atoi(port)
		if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
			h = r.Address
		}
		out = append(out, &api.AgentServiceRegistration{
			ID:      fmt.Sprintf("%s-%s-%d", r.Service, host, n),
			Name:    r.Service,
			Address: h,
			Port:    n,
			Tags:    append(append([]string(nil), r.Tags...), l.Role),
			Meta:    map[string]string{"listener": l.Name, "role": l.Role, "cluster": l.Cluster},
			Check: &api.AgentServiceCheck{
				Name:     "sluice /healthz",
				HTTP:     check,
				Interval: interval.String(),
				Timeout:  min(interval, 2*time.Second).String(),
				// A Sluice that died without deregistering leaves.
				DeregisterCriticalServiceAfter: "1m",
			},
		})
	}
	return out
}

// reachable is an address to reach a listener at from this host: a
// wildcard becomes the loopback address.
func reachable(a net.Addr) string {
	h, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, port)
}

func (r *Registrar) register(ctx context.Context, regs []*api.AgentServiceRegistration) {
	defer close(r.done)
	log := r.Log
	if log == nil {
		log = zap.NewNop()
	}
	backoff := time.Duration(0)
	for _, reg := range regs {
		for {
			err := r.Client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
			if err == nil {
				log.Info("registered in consul", zap.String("service", reg.Name), zap.String("id", reg.ID), zap.Int("port", reg.Port))
				break
			}
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			log.Warn("consul registration failed; retrying", zap.String("id", reg.ID), zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// Stop implements proxy.Hook: it deregisters every instance.
func (r *Registrar) Stop() {
	r.mu.Lock()
	cancel, done, ids := r.cancel, r.done, r.ids
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	for _, id := range ids {
		q := (&api.QueryOptions{}).WithContext(ctx)
		if err := r.Client.Agent().ServiceDeregisterOpts(id, q); err != nil && r.Log != nil {
			r.Log.Warn("consul deregistration failed", zap.String("id", id), zap.Error(err))
		}
	}
}
