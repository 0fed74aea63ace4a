package filters

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/config"
	"github.com/sluicedb/sluice/core/engine"
	"github.com/sluicedb/sluice/core/proxy"
	"github.com/sluicedb/sluice/core/session"
)

// WatchInterval is how often a running proxy looks at its module files.
const WatchInterval = time.Second

// Configs turns cfg's filter blocks into Configs, in file order, with
// compiled modules cached in cacheDir.
func Configs(cfg *config.Config, cacheDir string) []Config {
	out := make([]Config, len(cfg.Filters))
	for i, f := range cfg.Filters {
		out[i] = Config{Name: f.Name, Module: f.Module, FailurePolicy: f.FailurePolicy, Timeout: f.Timeout,
			MemoryLimit: f.MemoryLimit, Instances: f.Instances, RealClock: f.RealClock, Config: f.Config, CacheDir: cacheDir}
	}
	return out
}

// DefaultCacheDir is where a proxy keeps compiled modules: the user's
// cache directory, else the system's temporary one.
func DefaultCacheDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "sluice", "filters")
}

// Options returns the proxy options that run cfg's filter blocks: every
// session of every listener goes through the chain (session start,
// statements, session end); a reload (SIGHUP) or a change of a module
// file loads the chain again and swaps it in when all of it loaded; the
// filters' metrics are on /metrics. With no filter blocks it returns no
// option: sessions pay nothing, and adding filters takes a restart.
func Options(ctx context.Context, cfg *config.Config, log *zap.Logger) ([]proxy.Option, error) {
	if len(cfg.Filters) == 0 {
		return nil, nil
	}
	h, err := NewHook(ctx, cfg, DefaultCacheDir(), log)
	if err != nil {
		return nil, err
	}
	return []proxy.Option{proxy.WithSessionStarter(h.StartSession), proxy.WithHook(h), proxy.WithCollector(h.Collector())}, nil
}

// Hook is a Set serving a proxy: the proxy.Hook that watches the module
// files while it serves and closes the set when it stops, the
// proxy.Reloader that loads a new chain on reload, and the SessionStarter.
type Hook struct {
	*Set
	log      *zap.Logger
	cacheDir string
	roles    map[string]string // listener name -> "writer", "reader" or "split"

	mu   sync.Mutex
	stop context.CancelFunc
	done chan struct{}
}

// NewHook loads cfg's filters.
func NewHook(ctx context.Context, cfg *config.Config, cacheDir string, log *zap.Logger) (*Hook, error) {
	set, err := NewSet(ctx, Configs(cfg, cacheDir), log.Named("filters"))
	if err != nil {
		return nil, err
	}
	h := &Hook{Set: set, log: log, cacheDir: cacheDir, roles: make(map[string]string)}
	for _, l := range cfg.Listeners {
		h.roles[l.Name] = string(l.Role)
	}
	return h, nil
}

// StartSession is the proxy's SessionStarter.
func (h *Hook) StartSession(listener string, a engine.SessionAttrs) (session.Policy, error) {
	p, err := h.ForSession(SessionAttrs{User: a.User, Database: a.Database, ApplicationName: a.ApplicationName,
		ClientAddr: a.ClientAddr, Listener: listener, TLS: a.TLS, ListenerRole: h.roles[listener]})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Start implements proxy.Hook: it watches the module files.
func (h *Hook) Start(*proxy.Proxy) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		h.Watch(ctx, WatchInterval)
	}()
	return nil
}

// Stop implements proxy.Hook: no more watching; the chain closes once the
// last session ends.
func (h *Hook) Stop() {
	h.mu.Lock()
	stop, done := h.stop, h.done
	h.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	h.Close()
}

// Reload implements proxy.Reloader: the filter blocks of cfg, loaded in
// full before they replace the running chain.
func (h *Hook) Reload(cfg *config.Config) error {
	err := h.Set.Reload(context.Background(), Configs(cfg, h.cacheDir))
	if err != nil {
		h.log.Error("filters not reloaded", zap.Error(err))
	}
	return err
}
