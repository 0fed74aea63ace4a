package pool

import (
	"context"
	"maps"
)

// maxKnownParams bounds how many validated startup-parameter sets a pool
// remembers; beyond it the cache starts afresh.
const maxKnownParams = 1024

// serverParams is a pool's memory of what its server reports, so that a
// login is answered without borrowing a connection: the parameters a new
// server session reports, and for each set of startup parameters a client
// sent that the server accepted, the server's spelling of those it reports.
type serverParams struct {
	defaults map[string]string
	known    map[string]map[string]string
}

// Defaults returns the parameters a new server session of this pool reports
// (server_version, TimeZone, ...), as the last connection it opened
// reported them. When the pool has never connected it opens (borrows and
// returns) one connection first. The map must not be modified.
func (p *Pool) Defaults(ctx context.Context) (map[string]string, error) {
	p.mu.Lock()
	d := p.params.defaults
	p.mu.Unlock()
	if d != nil {
		return d, nil
	}
	c, err := p.Borrow(ctx)
	if err != nil {
		return nil, err
	}
	p.Return(c)
	p.mu.Lock()
	d = p.params.defaults
	p.mu.Unlock()
	return d, nil
}

// noteDefaultsLocked records what a new connection reported.
func (p *Pool) noteDefaultsLocked(c *Conn) {
	if !maps.Equal(p.params.defaults, c.Reported) {
		p.params.defaults = maps.Clone(c.Reported)
		p.params.known = nil // another server (or version): validate again
	}
}

// KnownParams returns what LearnParams recorded for key.
func (p *Pool) KnownParams(key string) (map[string]string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.params.known[key]
	return v, ok
}

// LearnParams records that the server accepted the startup parameters
// fingerprinted by key, and its spelling of those it reports. The map must
// not be modified afterwards.
func (p *Pool) LearnParams(key string, spelled map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.params.known == nil || len(p.params.known) >= maxKnownParams {
		p.params.known = make(map[string]map[string]string)
	}
	p.params.known[key] = spelled
}
