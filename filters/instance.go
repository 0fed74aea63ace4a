package filters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
)

// Errors of a call into a filter. Each one is a failure: the filter's
// failure policy answers and the instance is destroyed.
var (
	// ErrTimeout is a call that passed its deadline.
	ErrTimeout = errors.New("filter call timed out")
	// ErrBusy is a call that found no free instance before its deadline.
	ErrBusy = errors.New("no filter instance free")
	// ErrTripped is a call skipped because the filter's breaker is open.
	ErrTripped = errors.New("filter breaker open")
	// ErrClosed is a call into a closed filter.
	ErrClosed = errors.New("filter closed")
)

// instance is one instantiated module. It serves one call at a time: it is
// owned by whoever took it from the pool until it is put back or destroyed.
type instance struct {
	f      *Filter
	mod    api.Module
	ctx    *callCtx
	cancel context.CancelFunc
	// seq counts calls and deadline is when the current one is stopped
	// (monotonic nanoseconds; 0 between calls): the watchdog reads them.
	seq      atomic.Uint64
	deadline atomic.Int64

	scratchFn, configure, start, statement, end api.Function

	stack      [2]uint64
	scratch    uint32 // address of the guest's scratch buffer
	scratchCap uint32
	calls      int
	dead       bool          // trapped, timed out or closed: never call again
	late       bool          // the last call finished past its timeout (but was not killed)
	probing    bool          // the warm-up call: counters are not touched
	retiring   bool          // worn out: a replacement is being built
	superseded atomic.Bool   // the replacement is in the pool: close this one
	sess       *sessionState // the session of the current call, if any
	line       []byte        // fd_write output not yet logged
	cluster    string        // last cluster name decoded, reused to spare an allocation
}

// callCtx is an instance's context for every call: host functions find
// their instance in it without a per-call allocation, and cancelling it
// (the deadline timer does) makes wazero close the module.
type callCtx struct {
	context.Context
	in *instance
}

type instanceKey struct{}

// Value implements context.Context.
func (c *callCtx) Value(k any) any {
	if _, ok := k.(instanceKey); ok {
		return c.in
	}
	return c.Context.Value(k)
}

func instanceFrom(ctx context.Context) *instance {
	if c, ok := ctx.(*callCtx); ok {
		return c.in
	}
	in, _ := ctx.Value(instanceKey{}).(*instance)
	return in
}

// newInstance instantiates the module, runs _initialize and
// sluice_on_configure, and asks for the scratch buffer.
func (f *Filter) newInstance(ctx context.Context) (*instance, error) {
	in := &instance{f: f}
	base, cancel := context.WithCancel(context.Background())
	in.ctx, in.cancel = &callCtx{Context: base, in: in}, cancel

	// Instantiation runs _initialize under a deadline of its own.
	initCtx, initCancel := context.WithTimeout(ctx, initTimeout)
	defer initCancel()
	mod, err := f.rt.InstantiateModule(&callCtx{Context: initCtx, in: in}, f.compiled, f.moduleConfig)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("instantiating: %w", err)
	}
	in.mod = mod
	f.watch.add(in)
	in.scratchFn = mod.ExportedFunction(exportScratch)
	in.configure = mod.ExportedFunction(exportConfigure)
	in.start = mod.ExportedFunction(exportStart)
	in.statement = mod.ExportedFunction(exportStatement)
	in.end = mod.ExportedFunction(exportEnd)
	if err := in.ensureScratch(maxInput); err != nil {
		in.close()
		return nil, err
	}
	if in.configure != nil {
		if err := in.callWithin(in.configure, initTimeout); err != nil {
			in.close()
			return nil, fmt.Errorf("%s: %w", exportConfigure, err)
		}
		if msg, ok := in.result(in.stack[0]); !ok {
			in.close()
			return nil, fmt.Errorf("%s: %w", exportConfigure, errBadOutput)
		} else if msg != nil {
			err := fmt.Errorf("%w: %s", ErrConfigRejected, msg)
			in.close()
			return nil, err
		}
	}
	// Warm up: a Go guest's first statement is slower (its runtime settles
	// in), and a fresh instance must not spend a client's deadline on that.
	if in.statement != nil {
		var v verdict
		in.probing = true
		err := in.statement1(&probe, &v, initTimeout)
		in.probing = false
		if err != nil {
			in.close()
			return nil, fmt.Errorf("probe statement: %w", err)
		}
	}
	return in, nil
}

// probe is the statement a new instance decides before it serves.
var probe = session.Statement{SQL: "SELECT 1", Class: []sqlclass.Statement{{Command: "SELECT", ReadOnly: true}}, Borrow: true}

// ErrConfigRejected is wrapped by Load's error when the filter's
// sluice_on_configure refuses its configuration.
var ErrConfigRejected = errors.New("filter rejected its configuration")

const (
	// maxInput is the largest hook input; the scratch buffer gets this size
	// when the instance is made, so that no hook call pays for growing it.
	maxInput    = maxSQL + inputHeader + 1024
	initTimeout = 5 * time.Second
)

// ensureScratch makes the guest's scratch buffer hold at least n bytes.
func (in *instance) ensureScratch(n int) error {
	if uint32(n) <= in.scratchCap && in.scratchCap != 0 {
		return nil
	}
	if n > maxInput {
		return errBadOutput
	}
	in.stack[0] = uint64(n)
	if err := in.callWithin(in.scratchFn, initTimeout); err != nil {
		return fmt.Errorf("%s: %w", exportScratch, err)
	}
	ptr := uint32(in.stack[0])
	if _, ok := in.mod.Memory().Read(ptr, uint32(n)); !ok {
		in.dead = true
		return fmt.Errorf("%s: buffer outside memory", exportScratch)
	}
	in.scratch, in.scratchCap = ptr, uint32(n)
	return nil
}

// KillAfter is when a call with timeout d is stopped: 2d + 5 ms. A call
// that finishes past d but before then is late, and its answer is used: on
// a busy machine the calling goroutine can lose its CPU in the middle of a
// call for a few milliseconds, which is no fault of the filter, and
// destroying a healthy instance then (rebuilding one costs ~5 ms of CPU)
// would make a busy machine busier. A call still running at KillAfter is a
// loop or a stall: its module is closed and the call fails.
func KillAfter(d time.Duration) time.Duration { return 2*d + 5*time.Millisecond }

// call calls fn with in.stack under the filter's deadline. Any error, or a
// kill, leaves the instance dead.
func (in *instance) call(fn api.Function) error { return in.callWithin(fn, in.f.cfg.Timeout) }

// callWithin is call with timeout d (killed at KillAfter(d)).
func (in *instance) callWithin(fn api.Function, d time.Duration) (err error) {
	if in.dead {
		return ErrClosed
	}
	in.calls++
	defer func() {
		in.deadline.Store(0)          // the call is over, however it ended: the watchdog may sleep
		if r := recover(); r != nil { // a host function's bug must not take the process down
			in.dead = true
			err = fmt.Errorf("%w: filter call panicked: %v", errTrap, r)
		}
	}()
	start := monotonic()
	in.seq.Add(1)
	in.deadline.Store(start + int64(KillAfter(d)))
	in.f.watch.started()
	err = fn.CallWithStack(in.ctx, in.stack[:])
	in.deadline.Store(0)
	fired := in.ctx.Err() != nil
	if !fired && err == nil && monotonic()-start > int64(d) {
		in.late = true
	}
	if fired || in.ctx.Err() != nil {
		// Even a call that returned is stopped once the kill fired: its
		// answer is dropped, and the module is closed anyway.
		in.dead = true
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		} else {
			err = ErrTimeout
		}
	}
	if err != nil {
		in.dead = true
		if !errors.Is(err, ErrTimeout) {
			err = fmt.Errorf("%w: %w", errTrap, err)
		}
	}
	return err
}

// result returns the bytes a packed result points at (nil for 0), and
// false when they lie outside memory.
func (in *instance) result(packed uint64) ([]byte, bool) {
	if packed == 0 {
		return nil, true
	}
	b, ok := in.mod.Memory().Read(uint32(packed>>32), uint32(packed))
	if !ok || len(b) == 0 {
		return nil, false
	}
	return b, true
}

// output logs what the guest writes to stdout or stderr, line by line.
func (in *instance) output(b []byte) {
	in.line = append(in.line, b...)
	for {
		i := bytes.IndexByte(in.line, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimSpace(in.line[:i]); len(line) > 0 {
			in.f.log.Warn("filter output", zap.ByteString("text", line))
		}
		in.line = in.line[i+1:]
	}
	if len(in.line) > 4096 {
		in.f.log.Warn("filter output", zap.ByteString("text", in.line))
		in.line = in.line[:0]
	}
}

// worn reports an instance that should be replaced although it works.
func (in *instance) worn() bool {
	return in.calls >= in.f.cfg.MaxCalls || int64(in.mod.Memory().Size()) > in.f.cfg.MemoryLimit*3/4
}

func (in *instance) close() {
	in.dead = true
	in.f.watch.remove(in)
	in.cancel()
	if in.mod != nil {
		_ = in.mod.Close(context.Background())
	}
}
