package filters

import (
	"sync"
	"sync/atomic"
	"time"
)

// Breaker settings: after tripAfter consecutive failures the filter is
// skipped for a back-off that starts at minBackoff and doubles up to
// maxBackoff while it keeps failing.
const (
	tripAfter  = 5
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// breaker stops calling a filter that keeps failing. It is safe for
// concurrent use; its fast path is one atomic load.
type breaker struct {
	failures  atomic.Int32
	openUntil atomic.Int64 // unix nanoseconds; 0 when closed

	mu      sync.Mutex
	backoff time.Duration
}

// allow reports whether a call may go ahead.
func (b *breaker) allow() bool {
	u := b.openUntil.Load()
	if u == 0 {
		return true
	}
	if time.Now().UnixNano() < u {
		return false
	}
	// Half open: one more failure trips it again, with a longer back-off.
	if b.openUntil.CompareAndSwap(u, 0) {
		b.failures.Store(tripAfter - 1)
	}
	return true
}

func (b *breaker) success() {
	if b.failures.Load() != 0 {
		b.failures.Store(0)
		b.mu.Lock()
		b.backoff = 0
		b.mu.Unlock()
	}
}

// failure records a failure and returns the back-off when it trips the
// breaker, else 0.
func (b *breaker) failure() time.Duration {
	if b.failures.Add(1) < tripAfter {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.Load() != 0 {
		return 0
	}
	if b.backoff == 0 {
		b.backoff = minBackoff
	} else {
		b.backoff = min(2*b.backoff, maxBackoff)
	}
	b.failures.Store(0)
	b.openUntil.Store(time.Now().Add(b.backoff).UnixNano())
	return b.backoff
}
