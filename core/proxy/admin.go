package proxy

import (
	"encoding/json"
	"net/http"

	"github.com/sluicedb/sluice/core/pool"
)

// adminHandler serves the admin HTTP endpoints: /healthz answers 200 while
// the proxy accepts clients; /metrics serves the Prometheus metrics
// (metrics.go); /pools lists each pool's counters; /sessions lists the
// clients with their pin reasons, and how often each reason pinned a
// session.
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
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
