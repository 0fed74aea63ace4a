package engine

import (
	"runtime"
	"sync"

	"github.com/sluicedb/sluice/core/engine/evloop"
	"github.com/sluicedb/sluice/core/session"
)

// askers are the goroutines that ask policies (a session's filter chain)
// on behalf of event-loop sessions. A fixed set serves the calls: a
// worker's stack has grown to what a filter call needs, and the calls in
// flight stay bounded by what can run. A call that finds every worker
// busy and the queue full runs on a goroutine of its own rather than make
// the loop wait: a session has at most one call out, so they are bounded
// by the sessions, and each by its filters' deadlines.
var askers = newAskPool(2*runtime.GOMAXPROCS(0), 256)

// askPool is a fixed set of goroutines fed by a queue, started on first
// use.
type askPool struct {
	start   sync.Once
	workers int
	calls   chan askCall
}

// askCall is one policy call: the machine to ask, and the loop to post
// done to once it answered.
type askCall struct {
	m    *session.Machine
	l    *evloop.Loop
	done func()
}

func newAskPool(workers, queue int) *askPool {
	return &askPool{workers: workers, calls: make(chan askCall, queue)}
}

// ask has m.AskPolicy called off the loop, then done posted to l.
func (p *askPool) ask(m *session.Machine, l *evloop.Loop, done func()) {
	p.start.Do(func() {
		for range p.workers {
			go p.work()
		}
	})
	c := askCall{m: m, l: l, done: done}
	select {
	case p.calls <- c:
	default:
		go c.run()
	}
}

func (p *askPool) work() {
	for c := range p.calls {
		c.run()
	}
}

func (c askCall) run() {
	c.m.AskPolicy()
	c.l.Post(c.done)
}
