package filters_test

import (
	"encoding/binary"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/engine/evloop"
	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/filters"
	"github.com/sluicedb/sluice/sdk/filtertest"
	"golang.org/x/sys/unix"
)

// Where should the event-loop engine call a filter's statement hook (issue
// 9)? On the loop, synchronously, under the call's deadline; or off the
// loop, on a worker goroutine that posts the decision back. The benchmarks
// below measure what each costs a statement, and TestSlowHookStallsLoop
// measures what each costs the loop's other clients when a call runs to
// its deadline.

// startLoop runs an event loop until the end of tb.
func startLoop(tb testing.TB) *evloop.Loop {
	tb.Helper()
	l, err := evloop.New(0)
	if err != nil {
		tb.Fatal(err)
	}
	go l.Run()
	tb.Cleanup(func() {
		l.Close()
		<-l.Done()
	})
	return l
}

// hookWorkers run filter calls off the loop: a fixed pool of goroutines fed
// by a channel, as many as the filter has instances, since a call beyond
// that could only wait for an instance to come free; a pool rather than a
// goroutine per call, whose stack would grow afresh for every call
// (BenchmarkHookOffLoop/goroutine measures that choice). The loop engine
// chose the pool from these measurements (core/engine/askers.go), with a
// goroutine of its own for a call that finds every worker busy and the
// queue full, so that the loop never waits. (Here the loop would block
// handing over such a call; the benchmarks and the test have one call in
// flight.)
type hookWorkers struct {
	calls chan func()
	wg    sync.WaitGroup
}

func startHookWorkers(n int) *hookWorkers {
	w := &hookWorkers{calls: make(chan func(), n)}
	w.wg.Add(n)
	for range n {
		go func() {
			defer w.wg.Done()
			for call := range w.calls {
				call()
			}
		}()
	}
	return w
}

// stop ends the workers once the calls handed to them are done.
func (w *hookWorkers) stop() {
	close(w.calls)
	w.wg.Wait()
}

// hookBench is a loop, a session of the readwrite example filter and a
// statement it sends to a replica, as in BenchmarkStatement.
type hookBench struct {
	l  *evloop.Loop
	h  *filtertest.Harness
	p  *filters.SessionPolicy
	st *session.Statement
	// done is signalled on the loop when a statement was answered; wrong
	// counts the answers that were not the replica (loop only).
	done  chan struct{}
	wrong int
	// calls are the durations of the Decide calls, wherever they ran,
	// warm-up included.
	calls []time.Duration
}

func newHookBench(b *testing.B, instances int) *hookBench {
	h := filtertest.Load(b, "../examples/filters/readwrite", filtertest.Options{Instances: instances})
	p := forSession(b, filters.Chain{h.Filter})
	b.Cleanup(func() { p.Close() })
	sql := "SELECT id, name FROM users WHERE id = $1"
	return &hookBench{l: startLoop(b), h: h, p: p,
		st:   &session.Statement{SQL: sql, Class: sqlclass.Classify(nil, sql), Borrow: true},
		done: make(chan struct{}, 1)}
}

// decide is the filter call, timed.
func (hb *hookBench) decide() session.Decision {
	start := time.Now()
	d := hb.p.Decide(hb.st)
	hb.calls = append(hb.calls, time.Since(start))
	return d
}

// answered runs on the loop with the decision for the statement: the
// point where the engine would write to the client.
func (hb *hookBench) answered(d session.Decision) {
	if d.Route.Role != session.RoleReplica {
		hb.wrong++
	}
	hb.done <- struct{}{}
}

// report checks the answers and reports the filter's failures, as
// BenchmarkStatement does: a call that missed its deadline on a busy
// machine is counted, not fatal.
func (hb *hookBench) report(b *testing.B) {
	stats := hb.h.Filter.Stats()
	if int64(hb.wrong) > stats.Failures {
		b.Fatalf("%d answers were not the replica, with %d failures; logs %v", hb.wrong, stats.Failures, hb.h.Logs())
	}
	slices.Sort(hb.calls)
	b.ReportMetric(float64(hb.calls[len(hb.calls)/2].Nanoseconds()), "call-median-ns")
	b.ReportMetric(float64(stats.Failures), "failures")
	b.ReportMetric(float64(hb.h.Filter.HookStats(filters.HookStatement).Late), "late")
}

// loopRoundTrips measures b.N round trips of one client through l, as a
// client's statement wakes the loop and waits for its answer: post op to
// the loop, then wait on done, which op's work signals on the loop. It
// reports the CPU of the whole process per round trip (the loop, the
// workers, the filter's watchdog, the runtime) and its context switches
// (voluntary and not: each is a thread that slept or was put off the
// CPU), and the median and p99 round trip; ns/op is the mean.
func loopRoundTrips(b *testing.B, l *evloop.Loop, op func(), done <-chan struct{}) {
	for range 100 { // warm up the loop, the workers and the instances
		l.Post(op)
		<-done
	}
	times := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	for i := range b.N {
		start := time.Now()
		l.Post(op)
		<-done
		times[i] = time.Since(start)
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	b.StopTimer()
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	switches := ru1.Nvcsw + ru1.Nivcsw - ru0.Nvcsw - ru0.Nivcsw
	slices.Sort(times)
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(switches)/float64(b.N), "ctxsw/op")
	b.ReportMetric(float64(times[len(times)/2].Nanoseconds()), "median-ns")
	b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkHookLoopBaseline is the round trip alone: the posted function
// only answers. The other hook benchmarks cost this plus their call.
func BenchmarkHookLoopBaseline(b *testing.B) {
	l := startLoop(b)
	done := make(chan struct{}, 1)
	loopRoundTrips(b, l, func() { done <- struct{}{} }, done)
}

// BenchmarkHookOnLoop calls the statement hook on the loop, as the engine
// does: the posted function decides and answers.
func BenchmarkHookOnLoop(b *testing.B) {
	hb := newHookBench(b, filters.DefaultInstances())
	loopRoundTrips(b, hb.l, func() { hb.answered(hb.decide()) }, hb.done)
	hb.report(b)
}

// BenchmarkHookOffLoop hands the call from the loop to a worker, which
// decides and posts the decision back to the loop, where it is answered.
// pool is a fixed pool of workers (hookWorkers, what an engine would use);
// goroutine starts a goroutine per call, for comparison.
func BenchmarkHookOffLoop(b *testing.B) {
	b.Run("pool", func(b *testing.B) {
		hb := newHookBench(b, filters.DefaultInstances())
		w := startHookWorkers(filters.DefaultInstances())
		defer w.stop()
		var d session.Decision
		answer := func() { hb.answered(d) }
		call := func() {
			d = hb.decide()
			hb.l.Post(answer)
		}
		loopRoundTrips(b, hb.l, func() { w.calls <- call }, hb.done)
		hb.report(b)
	})
	b.Run("goroutine", func(b *testing.B) {
		hb := newHookBench(b, filters.DefaultInstances())
		var d session.Decision
		answer := func() { hb.answered(d) }
		call := func() {
			d = hb.decide()
			hb.l.Post(answer)
		}
		loopRoundTrips(b, hb.l, func() { go call() }, hb.done)
		hb.report(b)
	})
}

// probe is one piece of another client's work on the loop: when it was due,
// when it was handed to the loop, and when it ran there.
type probe struct{ due, posted, ran time.Time }

// poster posts a no-op to a loop every period from its own goroutine, as
// the work of the loop's other clients, and records on the loop when each
// ran. It paces itself with nanosleep: Go's timers, when the process is
// idle, wake no more often than once a millisecond.
type poster struct {
	stop chan struct{}
	done chan []probe
}

func startPoster(l *evloop.Loop, period time.Duration) *poster {
	o := &poster{stop: make(chan struct{}), done: make(chan []probe, 1)}
	var probes []probe // loop only
	go func() {
		next := time.Now()
		for {
			select {
			case <-o.stop:
				l.Post(func() { o.done <- probes })
				return
			default:
			}
			due := next
			if wait := time.Until(due); wait > 0 {
				ts := unix.NsecToTimespec(int64(wait))
				unix.Nanosleep(&ts, nil)
			}
			posted := time.Now()
			l.Post(func() { probes = append(probes, probe{due, posted, time.Now()}) })
			// A slot this goroutine missed is not made up: the first probe
			// after a gap carries the lateness.
			next = due.Add(period)
			if posted.After(next) {
				next = posted.Add(period)
			}
		}
	}()
	return o
}

// finish stops the posting and returns the probes, all run.
func (o *poster) finish() []probe {
	close(o.stop)
	return <-o.done
}

// ticker is a timerfd registered with a loop that expires every period:
// readiness the kernel reports to the loop as it would a client's socket,
// with no goroutine in between. Its handler records, at each wake-up, how
// long the earliest expiration it had not seen waited (due = posted: the
// kernel hands it over as it fires).
type ticker struct {
	fd            int
	reg           evloop.Reg
	first, period int64 // CLOCK_MONOTONIC nanoseconds
	seen          uint64
	probes        []probe
}

func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// startTicker arms a ticker and registers it with l.
func startTicker(tb testing.TB, l *evloop.Loop, period time.Duration) *ticker {
	tb.Helper()
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	tk := &ticker{fd: fd, period: int64(period), first: monotonicNow() + int64(period)}
	errc := make(chan error, 1)
	l.Post(func() {
		var err error
		tk.reg, err = l.Add(fd, tk)
		errc <- err
	})
	if err := <-errc; err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(tk.first), Interval: unix.NsecToTimespec(tk.period)}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		tb.Fatal(err)
	}
	return tk
}

// Event implements evloop.Handler.
func (tk *ticker) Event(uint32) {
	var buf [8]byte
	for {
		if n, err := unix.Read(tk.fd, buf[:]); n != len(buf) || err != nil {
			return
		}
		now, mono := time.Now(), monotonicNow()
		wait := time.Duration(mono - (tk.first + int64(tk.seen)*tk.period))
		tk.seen += binary.NativeEndian.Uint64(buf[:])
		tk.probes = append(tk.probes, probe{now.Add(-wait), now.Add(-wait), now})
	}
}

// finish unregisters and closes the ticker and returns its probes.
func (tk *ticker) finish(l *evloop.Loop) []probe {
	done := make(chan []probe, 1)
	l.Post(func() {
		l.Remove(tk.reg)
		unix.Close(tk.fd)
		done <- tk.probes
	})
	return <-done
}

// worst returns the longest wait of the probes due in [from, to): from
// being handed to the loop to running there (queued), and from being due
// to running (late: for the poster, its own scheduling included), and
// how many there were.
func worst(probes []probe, from, to time.Time) (queued, late time.Duration, n int) {
	for _, p := range probes {
		if p.due.Before(from) || !p.due.Before(to) {
			continue
		}
		n++
		queued = max(queued, p.ran.Sub(p.posted))
		late = max(late, p.ran.Sub(p.due))
	}
	return queued, late, n
}

// ranBetween counts the probes that ran in (from, to).
func ranBetween(probes []probe, from, to time.Time) (n int) {
	for _, p := range probes {
		if p.ran.After(from) && p.ran.Before(to) {
			n++
		}
	}
	return n
}

// slowCall is a statement hook call that runs until it is killed, made on
// or off the loop, and when things happened to it.
type slowCall struct {
	posted     time.Time     // the client's statement was posted to the loop
	held       time.Duration // how long the posted function held the loop
	start, end time.Time     // the filter call
	answered   time.Time     // its decision, back on the loop
	d          session.Decision
}

// TestSlowHookStallsLoop measures how long a statement hook call that runs
// to its deadline (the kitchen filter's "loop", killed at
// KillAfter(timeout) with the default timeout) delays the loop's other
// clients, when the call is made on the loop and when it is handed to a
// worker. The other clients are a no-op posted every 100 µs from another
// goroutine, and a timerfd on the loop expiring every 100 µs (readiness
// as a client's socket gives it). It logs the measurements, and checks
// only what holds on any machine: each call is killed and answered by the
// failure policy; on the loop it holds the loop for at least its timeout,
// off the loop for less time than the call.
func TestSlowHookStallsLoop(t *testing.T) {
	const (
		rounds = 3
		period = 100 * time.Microsecond
		quiet  = 30 * time.Millisecond // between slow calls: a replacement instance is built meanwhile
	)
	timeout := filters.DefaultTimeout
	for _, offLoop := range []bool{false, true} {
		name := "on-loop"
		if offLoop {
			name = "off-loop"
		}
		t.Run(name, func(t *testing.T) {
			h := filtertest.Load(t, kitchen, filtertest.Options{Instances: 2})
			l := startLoop(t)
			p := forSession(t, filters.Chain{h.Filter})
			defer p.Close()
			w := startHookWorkers(2)
			defer w.stop()
			st := &session.Statement{SQL: "loop", Class: sqlclass.Classify(nil, "loop"), Borrow: true}
			answered := make(chan struct{})

			posts, ticks := startPoster(l, period), startTicker(t, l, period)
			begin := time.Now()
			var calls []*slowCall
			for range rounds {
				time.Sleep(quiet) // spacing the measurement, not synchronisation
				c := &slowCall{posted: time.Now()}
				calls = append(calls, c)
				answer := func() {
					c.answered = time.Now()
					answered <- struct{}{}
				}
				call := func() {
					c.start = time.Now()
					c.d = p.Decide(st)
					c.end = time.Now()
				}
				l.Post(func() {
					t0 := time.Now()
					if offLoop {
						w.calls <- func() {
							call()
							l.Post(answer)
						}
						c.held = time.Since(t0)
						return
					}
					call()
					c.held = time.Since(t0)
					answer()
				})
				<-answered
			}
			time.Sleep(quiet)
			posted, ticked := posts.finish(), ticks.finish(l)

			for i, c := range calls {
				if c.d.Route.Role != session.RoleWriter || c.d.Reject != nil {
					t.Errorf("call %d: %+v, want fail_safe's writer", i, c.d)
				}
			}
			if got := h.Filter.Stats().Timeouts; got != rounds {
				t.Errorf("%d timeouts, want %d: %+v", got, rounds, h.Filter.Stats())
			}
			// The quiet loop: the middle of the wait before the first call.
			from, to := begin.Add(quiet/4), calls[0].posted.Add(-quiet/4)
			pq, pl, pn := worst(posted, from, to)
			_, tl, tn := worst(ticked, from, to)
			t.Logf("%s, quiet loop: posts queued ≤ %v, late ≤ %v (%d); timerfd late ≤ %v (%d wake-ups)",
				name, pq.Round(time.Microsecond), pl.Round(time.Microsecond), pn, tl.Round(time.Microsecond), tn)
			for i, c := range calls {
				// From a little before the call was posted: an expiration
				// due then may reach the loop only after the call began.
				from := c.posted.Add(-2 * period)
				pq, pl, pn := worst(posted, from, c.end)
				_, tl, tn := worst(ticked, from, c.end)
				t.Logf("%s, slow call %d: ran %v (killed at %v), held the loop %v, answered after %v; "+
					"meanwhile posts queued ≤ %v, late ≤ %v (%d, %d ran during the call); timerfd late ≤ %v (%d wake-ups, %d during the call)",
					name, i, c.end.Sub(c.start).Round(time.Microsecond), filters.KillAfter(timeout),
					c.held.Round(time.Microsecond), c.answered.Sub(c.posted).Round(time.Microsecond),
					pq.Round(time.Microsecond), pl.Round(time.Microsecond), pn, ranBetween(posted, c.start, c.end),
					tl.Round(time.Microsecond), tn, ranBetween(ticked, c.start, c.end))
				if !offLoop && c.held < timeout {
					t.Errorf("call %d held the loop %v, less than its timeout %v: was it killed early?", i, c.held, timeout)
				}
				if offLoop && c.held >= c.end.Sub(c.start) {
					t.Errorf("call %d off the loop held the loop %v, as long as the call (%v)", i, c.held, c.end.Sub(c.start))
				}
			}
		})
	}
}
