package filters

import (
	"sync"
	"sync/atomic"
	"time"
)

// watchdogTick is how often a filter's watchdog looks at its calls in
// flight. A call is stopped at most one tick after KillAfter.
const watchdogTick = time.Millisecond

// watchdogIdle is how many ticks without a call started or in flight the
// watchdog waits before it sleeps until the next call.
const watchdogIdle = 1000

// watchdog stops calls that run past their kill deadline. One goroutine
// per filter looks at every live instance each tick, instead of a timer
// per call: resetting a timer on every call costs a write to wake Go's
// network poller, and thread wake-ups, which cost more than the call.
type watchdog struct {
	mu     sync.Mutex
	live   map[*instance]struct{}
	calls  atomic.Int64 // calls started, to notice idleness
	asleep atomic.Bool
	wake   chan struct{}
}

// epoch is the origin of instance deadlines (monotonic nanoseconds).
var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }

func (f *Filter) startWatchdog() {
	f.watch.wake = make(chan struct{}, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.watch.run(f.bg.Done())
	}()
}

func (w *watchdog) add(in *instance) {
	w.mu.Lock()
	if w.live == nil {
		w.live = make(map[*instance]struct{})
	}
	w.live[in] = struct{}{}
	w.mu.Unlock()
}

func (w *watchdog) remove(in *instance) {
	w.mu.Lock()
	delete(w.live, in)
	w.mu.Unlock()
}

// started is called as a call begins: it wakes a sleeping watchdog.
func (w *watchdog) started() {
	w.calls.Add(1)
	if w.asleep.Load() && w.asleep.CompareAndSwap(true, false) {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *watchdog) run(done <-chan struct{}) {
	t := time.NewTicker(watchdogTick)
	defer t.Stop()
	last, idle := w.calls.Load(), 0
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		inFlight := w.check()
		if n := w.calls.Load(); n != last || inFlight {
			// A call that runs longer than the idle ticks (a timeout
			// over half a second) keeps the watchdog awake to stop it.
			last, idle = n, 0
			continue
		}
		if idle++; idle < watchdogIdle {
			continue
		}
		// Sleep until a call starts; look again after saying so, so that a
		// call that started in between is not missed.
		w.asleep.Store(true)
		if w.calls.Load() != last {
			w.asleep.Store(false)
			continue
		}
		t.Stop()
		select {
		case <-done:
			return
		case <-w.wake:
		}
		t.Reset(watchdogTick)
		idle = 0
	}
}

// check stops every call past its deadline, and reports whether a call
// is in flight.
func (w *watchdog) check() (inFlight bool) {
	now := monotonic()
	w.mu.Lock()
	defer w.mu.Unlock()
	for in := range w.live {
		seq := in.seq.Load()
		d := in.deadline.Load()
		if d == 0 {
			continue
		}
		inFlight = true
		if now > d && in.seq.Load() == seq {
			in.cancel() // wazero closes the module; the call returns an error
		}
	}
	return inFlight
}
