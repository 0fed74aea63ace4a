package proxy

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/engine/evloop"
)

// eventLoops are the loop engine's event loops; sessions are dealt to them
// in turn.
type eventLoops struct {
	loops []*evloop.Loop
	next  atomic.Uint32
	wg    sync.WaitGroup
}

// startLoops starts n event loops (0: one per two CPUs, at least one).
func startLoops(n int, log *zap.Logger) (*eventLoops, error) {
	if n <= 0 {
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	e := &eventLoops{}
	for i := range n {
		l, err := evloop.New(i)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("starting event loop: %w", err)
		}
		e.loops = append(e.loops, l)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := l.Run(); err != nil && err != evloop.ErrClosed {
				log.Error("event loop failed", zap.Int("loop", i), zap.Error(err))
			}
		}()
	}
	return e, nil
}

// Pick returns the next loop (engine.Loops).
func (e *eventLoops) Pick() *evloop.Loop {
	return e.loops[int(e.next.Add(1))%len(e.loops)]
}

// Close stops the loops and waits for them.
func (e *eventLoops) Close() {
	for _, l := range e.loops {
		l.Close()
	}
	e.wg.Wait()
}
