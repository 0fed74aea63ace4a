package filters

import (
	"sync"
	"time"
)

// instPool holds a filter's free instances. It is a stack, so that the
// instance used last (its memory in the CPU's caches) serves the next
// call; a caller that finds it empty waits in line for the next instance
// given back, up to a deadline.
type instPool struct {
	mu      sync.Mutex
	free    []*instance
	waiters []chan *instance // first come, first served; each holds one instance
}

// get takes a free instance, waiting at most d; done ends the wait.
func (p *instPool) get(d time.Duration, done <-chan struct{}) (*instance, error) {
	p.mu.Lock()
	if in := p.popLocked(); in != nil {
		p.mu.Unlock()
		return in, nil
	}
	w := make(chan *instance, 1)
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	var err error
	select {
	case in := <-w:
		return in, nil
	case <-t.C:
		err = ErrBusy
	case <-done:
		err = ErrClosed
	}
	p.mu.Lock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return nil, err
		}
	}
	p.mu.Unlock()
	// A put chose this waiter as it gave up: the instance is in w.
	return <-w, nil
}

// popLocked pops the top free instance, closing superseded ones on the way.
func (p *instPool) popLocked() *instance {
	for n := len(p.free); n > 0; n = len(p.free) {
		in := p.free[n-1]
		p.free = p.free[:n-1]
		if !in.superseded.Load() {
			return in
		}
		in.close()
	}
	return nil
}

// put gives in back: to the first waiter, else on top of the stack.
// Superseded instances left in the stack are closed.
func (p *instPool) put(in *instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w <- in // never blocks: each waiter gets one
		return
	}
	kept := p.free[:0]
	for _, x := range p.free {
		if x.superseded.Load() {
			x.close()
			continue
		}
		kept = append(kept, x)
	}
	p.free = append(kept, in)
}

// drain takes every free instance out.
func (p *instPool) drain() []*instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.free
	p.free = nil
	return out
}
