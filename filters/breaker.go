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
// concurrent use; its fast path is one atomic load. It opens after
// tripAfter consecutive failures that came from at least two sessions: a
// filter failing for everyone is skipped, while one session sending
// statements the filter chokes on pays for them itself (each bounded by
// the call's deadline) and the other sessions never notice.
type breaker struct {
	failures  atomic.Int32
	openUntil atomic.Int64 // unix nanoseconds; 0 when closed

	mu           sync.Mutex
	backoff      time.Duration
	halfOpen     bool          // the back-off ended: one more failure opens it again
	first, other *sessionState // sessions of the current streak of failures
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
	if b.openUntil.CompareAndSwap(u, 0) {
		b.mu.Lock()
		b.halfOpen = true
		b.mu.Unlock()
		b.failures.Store(1) // so that a success clears halfOpen
	}
	return true
}

func (b *breaker) success() {
	if b.failures.Load() != 0 {
		b.failures.Store(0)
		b.mu.Lock()
		b.backoff, b.halfOpen, b.first, b.other = 0, false, nil, nil
		b.mu.Unlock()
	}
}

// failure records a failure of a call for session s (nil for none) and
// returns the back-off when it opens the breaker, else 0.
func (b *breaker) failure(s *sessionState) time.Duration {
	n := b.failures.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.first == nil:
		b.first = s
	case s != b.first:
		b.other = s
	}
	if !b.halfOpen && (n < tripAfter || b.other == nil) || b.openUntil.Load() != 0 {
		return 0
	}
	if b.backoff == 0 {
		b.backoff = minBackoff
	} else {
		b.backoff = min(2*b.backoff, maxBackoff)
	}
	b.failures.Store(0)
	b.halfOpen, b.first, b.other = false, nil, nil
	b.openUntil.Store(time.Now().Add(b.backoff).UnixNano())
	return b.backoff
}
