package filters

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Set is the proxy's running filter chain, which a reload replaces
// atomically. A reload compiles, instantiates, configures and warms every
// filter of the new chain (Load does all four) before any session sees it;
// if any filter fails to load, the running chain keeps serving. Sessions
// move to the new chain when they next borrow a server connection, so a
// transaction runs on the version it began with; the old chain is closed
// once its last session has moved on or ended. It is safe for concurrent
// use.
type Set struct {
	log *zap.Logger
	cur atomicVersion

	mu      sync.Mutex // serializes loads and guards what follows
	cfgs    []Config
	files   map[string]fileStamp // by module path: what the running chain was loaded from
	metrics map[string]*metrics  // by filter name, kept across versions
	gen     uint64
	closed  bool
}

// fileStamp identifies the content of a module file cheaply.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// NewSet loads cfgs, in order. An empty cfgs is a Set with no filters:
// ForSession then returns a policy that never changes a decision.
func NewSet(ctx context.Context, cfgs []Config, log *zap.Logger) (*Set, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Set{log: log, metrics: make(map[string]*metrics)}
	if err := s.Reload(ctx, cfgs); err != nil {
		return nil, err
	}
	return s, nil
}

// ErrReload is wrapped by the error of a reload that failed: the running
// chain keeps serving.
var ErrReload = errors.New("filter reload failed; the running filters keep serving")

// Reload loads cfgs and makes them the current chain. On error nothing
// changes.
func (s *Set) Reload(ctx context.Context, cfgs []Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reload(ctx, cfgs)
}

func (s *Set) reload(ctx context.Context, cfgs []Config) error {
	if s.closed {
		return ErrClosed
	}
	first := s.cur.Load() == nil
	stamps := make(map[string]fileStamp, len(cfgs))
	chain := make(Chain, 0, len(cfgs))
	fail := func(name string, err error) error {
		chain.close()
		if m := s.metrics[name]; m != nil {
			m.reloadsFailed.Add(1)
		}
		if first {
			return err
		}
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	seen := make(map[string]bool, len(cfgs))
	for _, c := range cfgs {
		if seen[c.Name] {
			return fail(c.Name, fmt.Errorf("%w: two filters are named %q", ErrConfig, c.Name))
		}
		seen[c.Name] = true
		st, err := os.Stat(c.Module)
		if err != nil {
			return fail(c.Name, fmt.Errorf("filter %q: %w", c.Name, err))
		}
		stamps[c.Module] = fileStamp{size: st.Size(), modTime: st.ModTime()}
		m := s.metrics[c.Name]
		if m == nil {
			m = &metrics{}
		}
		f, err := load(ctx, c, s.log, m)
		if err != nil {
			if s.metrics[c.Name] == nil {
				s.metrics[c.Name] = m
			}
			return fail(c.Name, err)
		}
		s.metrics[c.Name] = m
		chain = append(chain, f)
	}
	s.gen++
	v := &version{chain: chain, gen: s.gen}
	v.refs.Store(1) // current
	old := s.cur.Swap(v)
	s.cfgs, s.files = cfgs, stamps
	for _, f := range chain {
		if !first {
			f.m.reloads.Add(1)
		}
	}
	if old != nil {
		old.release()
		s.log.Info("filters reloaded", zap.Uint64("generation", s.gen), zap.Int("filters", len(chain)))
	}
	return nil
}

// Changed reports whether a module file of the running chain changed
// (size or modification time) since it was loaded.
func (s *Set) Changed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed()
}

func (s *Set) changed() bool {
	for path, was := range s.files {
		st, err := os.Stat(path)
		if err != nil {
			continue // a file being replaced: look again next time
		}
		if st.Size() != was.size || !st.ModTime().Equal(was.modTime) {
			return true
		}
	}
	return false
}

// ReloadChanged reloads the running configuration when a module file
// changed; it reports whether it tried.
func (s *Set) ReloadChanged(ctx context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.changed() {
		return false, nil
	}
	err := s.reload(ctx, s.cfgs)
	if err != nil {
		// Do not try the same broken file again and again: remember it.
		for _, c := range s.cfgs {
			if st, serr := os.Stat(c.Module); serr == nil {
				s.files[c.Module] = fileStamp{size: st.Size(), modTime: st.ModTime()}
			}
		}
	}
	return true, err
}

// Watch reloads the chain whenever a module file changes, looking every
// interval, until ctx ends. A failed reload is logged; the running chain
// keeps serving.
func (s *Set) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if tried, err := s.ReloadChanged(ctx); tried && err != nil {
			s.log.Error("a filter module changed but cannot be loaded", zap.Error(err))
		}
	}
}

// Generation counts the chains loaded so far: 1 after NewSet.
func (s *Set) Generation() uint64 {
	if v := s.cur.Load(); v != nil {
		return v.gen
	}
	return 0
}

// Chain returns the current chain (for inspection: its filters may be
// closed by a later reload).
func (s *Set) Chain() Chain {
	if v := s.cur.Load(); v != nil {
		return v.chain
	}
	return nil
}

// Len is the number of filters of the current chain.
func (s *Set) Len() int { return len(s.Chain()) }

// ForSession starts a session on the current chain: see Chain.ForSession.
// The session's filters are closed only after it is closed.
func (s *Set) ForSession(attrs SessionAttrs) (*SessionPolicy, error) {
	v := s.acquire()
	if v == nil {
		return nil, ErrClosed
	}
	return start(s, v, attrs)
}

// acquire takes a reference to the current version (nil once closed).
func (s *Set) acquire() *version {
	for {
		v := s.cur.Load()
		if v == nil || v.acquire() {
			return v
		}
		// v was replaced and released between Load and acquire: the new one
		// is current already.
	}
}

// Close closes the current chain once its sessions end; later sessions
// are refused with ErrClosed.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if old := s.cur.Swap(nil); old != nil {
		old.release()
	}
}

// follow moves the session to the set's current chain, if it changed:
// called when the session holds no server, so that a transaction never
// sees two versions. A filter that stays (same name) keeps the session's
// key/value store; one that is new sees a session start (its answer cannot
// refuse or move a running session); one that went sees a session end.
func (p *SessionPolicy) follow() {
	cur := p.set.cur.Load()
	if cur == nil || cur == p.ver || !cur.acquire() {
		return
	}
	old, oldSessions := p.ver, p.sessions
	p.sessions = make([]sessionState, len(cur.chain))
	kept := make([]bool, len(old.chain))
	for i, f := range cur.chain {
		s := &p.sessions[i]
		j := old.index(f.cfg.Name)
		if j >= 0 && oldSessions[j].kv != nil {
			*s = oldSessions[j]
			s.startFailed = false
			kept[j] = true
			continue
		}
		s.attrs = p.attrs
		s.kv = make(map[string][]byte)
		if f.sessionHook(s, true, &p.v) != nil {
			s.startFailed = true
		}
	}
	for j, f := range old.chain {
		if !kept[j] && oldSessions[j].kv != nil {
			_ = f.sessionHook(&oldSessions[j], false, &p.v)
		}
	}
	p.ver = cur
	old.release()
}

func (v *version) index(name string) int {
	for i, f := range v.chain {
		if f.cfg.Name == name {
			return i
		}
	}
	return -1
}
