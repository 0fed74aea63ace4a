package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	"github.com/sluicedb/sluice/core/pool"
)

// adminHandler serves the admin HTTP endpoints: /healthz answers 200 while
// the proxy accepts clients; /readyz answers 200 while it accepts clients
// and every cluster has a known writer, 503 naming what is missing
// otherwise; /metrics serves the Prometheus metrics (metrics.go); /pools
// lists each pool's counters; /sessions lists the clients with their pin
// reasons, and how often each reason pinned a session. With pprof, Go's
// profiles are under /debug/pprof/ (admin.pprof).
func (p *Proxy) adminHandler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			http.Error(w, "shutting down\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := p.unready(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", p.metrics.handler())
	mux.HandleFunc("GET /pools", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		out := make(map[string]pool.Stats, len(p.pools))
		for _, pl := range p.pools {
			out[pl.Name()] = pl.Stats()
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Sessions  []SessionInfo     `json:"sessions"`
			PinCounts map[string]uint64 `json:"pin_counts"`
		}{p.Sessions(), p.PinCounts()})
	})
	return mux
}

// unready says why the proxy is not ready to serve (shutting down, or
// the clusters with no known writer, one per line), or "" when it is.
func (p *Proxy) unready() string {
	p.mu.Lock()
	closed := p.closed
	names := make([]string, 0, len(p.topo.clusters))
	for name, tc := range p.topo.clusters {
		if tc.Current().UsableWriter() == nil {
			names = append(names, name)
		}
	}
	p.mu.Unlock()
	if closed {
		return "shutting down"
	}
	slices.Sort(names)
	lines := make([]string, len(names))
	for i, name := range names {
		lines[i] = fmt.Sprintf("cluster %q has no known writer", name)
	}
	return strings.Join(lines, "\n")
}
