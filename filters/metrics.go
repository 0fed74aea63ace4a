package filters

import (
	"errors"
	"sync/atomic"
	"time"
)

// Hook names, as metrics and logs label them.
const (
	HookSessionStart = "session_start"
	HookStatement    = "statement"
	HookSessionEnd   = "session_end"
)

// hooks in the order of hookStats' arrays.
var hookNames = [...]string{HookSessionStart, HookStatement, HookSessionEnd}

const (
	hookStart = iota
	hookStatement
	hookEnd
	numHooks
)

// latencyBounds are the upper bounds of the call latency histogram's
// buckets, in seconds: from 1 µs to the longest sensible deadline.
var latencyBounds = [...]float64{1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3}

// HookStats count the calls of one hook of one filter.
type HookStats struct {
	Calls    int64 // calls attempted
	Errors   int64 // calls that failed, for any reason
	Traps    int64 // failures that were a trap, a panic or an exit of the guest
	Timeouts int64 // failures that were the deadline (the call was killed)
	Late     int64 // calls that succeeded past their timeout, before the kill
	// Buckets counts calls by latency: Buckets[i] those that took at most
	// LatencyBounds()[i] (not cumulative); the last entry those above.
	Buckets    [len(latencyBounds) + 1]int64
	LatencySum time.Duration
}

// LatencyBounds returns the upper bounds, in seconds, of HookStats.Buckets.
func LatencyBounds() []float64 { return latencyBounds[:] }

// hookCounters are HookStats kept with atomics: a filter's hooks are called
// from every session at once.
type hookCounters struct {
	calls, errors, traps, timeouts, late atomic.Int64
	buckets                              [len(latencyBounds) + 1]atomic.Int64
	sum                                  atomic.Int64 // nanoseconds
}

// metrics are what one filter name accumulates over its versions: a hot
// reload loads a new Filter that counts into the same metrics.
type metrics struct {
	hooks         [numHooks]hookCounters
	trips         atomic.Int64
	conflicts     atomic.Int64
	reloads       atomic.Int64
	reloadsFailed atomic.Int64
	counters      counters // the filter's own, from counter_add
}

func (m *metrics) observe(hook int, d time.Duration) {
	h := &m.hooks[hook]
	h.calls.Add(1)
	s := d.Seconds()
	i := 0
	for i < len(latencyBounds) && s > latencyBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(int64(d))
}

func (m *metrics) failed(hook int, err error) {
	h := &m.hooks[hook]
	h.errors.Add(1)
	switch {
	case errors.Is(err, ErrTimeout):
		h.timeouts.Add(1)
	case errors.Is(err, errTrap):
		h.traps.Add(1)
	}
}

func (m *metrics) hook(hook int) HookStats {
	h := &m.hooks[hook]
	s := HookStats{Calls: h.calls.Load(), Errors: h.errors.Load(), Traps: h.traps.Load(),
		Timeouts: h.timeouts.Load(), Late: h.late.Load(), LatencySum: time.Duration(h.sum.Load())}
	for i := range h.buckets {
		s.Buckets[i] = h.buckets[i].Load()
	}
	return s
}

// errTrap wraps what a guest's call returned when it trapped, panicked or
// exited (not a deadline).
var errTrap = errors.New("filter trapped")
