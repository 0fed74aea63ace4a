package filters

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicedb/sluice/core/session"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
)

// Filter is one loaded filter module: a wazero runtime, the compiled module
// and a pool of configured instances. It is safe for concurrent use; every
// call into it is bounded by its Timeout. The caller of Load owns it and must
// call Close.
type Filter struct {
	cfg          Config
	log          *zap.Logger
	rt           wazero.Runtime
	cache        wazero.CompilationCache
	compiled     wazero.CompiledModule
	moduleConfig wazero.ModuleConfig
	hasStart     bool
	hasStatement bool
	hasEnd       bool

	pool    instPool
	watch   watchdog
	breaker breaker
	m       *metrics // shared by the versions of a filter name
	stats   struct{ calls, failures, timeouts, trips, replaced atomic.Int64 }

	bg       context.Context // ends with Close: background instance replacement
	bgCancel context.CancelFunc
	mu       sync.Mutex // guards closed and wg.Add
	closed   bool
	wg       sync.WaitGroup
	building atomic.Int32 // replacement instances being built

	slowBuild time.Duration // tests only: each replacement waits this long first
}

// Stats counts what happened to a filter since it was loaded.
type Stats struct {
	Calls    int64 // hook calls attempted
	Failures int64 // calls that failed (trap, panic, timeout, bad output, busy, breaker open)
	Timeouts int64 // failures that were timeouts
	Trips    int64 // times the breaker opened
	Replaced int64 // instances destroyed and replaced
}

// Load compiles the module at cfg.Module, checks its ABI version,
// instantiates cfg.Instances instances and configures each one. It fails
// when the module is not a Sluice filter of ABI version 1, imports
// functions the host does not provide, or rejects its configuration.
func Load(ctx context.Context, cfg Config, log *zap.Logger) (*Filter, error) {
	return load(ctx, cfg, log, &metrics{})
}

// load is Load counting into m.
func load(ctx context.Context, cfg Config, log *zap.Logger, m *metrics) (*Filter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	wasm, err := os.ReadFile(cfg.Module)
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", cfg.Name, err)
	}
	f := &Filter{cfg: cfg, log: log.With(zapName(cfg.Name)), m: m}
	f.bg, f.bgCancel = context.WithCancel(context.Background())
	rc := wazero.NewRuntimeConfigCompiler().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(uint32(cfg.MemoryLimit >> 16)).
		WithMemoryCapacityFromMax(false)
	if cfg.CacheDir != "" {
		if f.cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("filter %q: compilation cache: %w", cfg.Name, err)
		}
		rc = rc.WithCompilationCache(f.cache)
	}
	f.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if err := f.load(ctx, wasm); err != nil {
		f.Close()
		return nil, fmt.Errorf("filter %q: %w", cfg.Name, err)
	}
	return f, nil
}

func (f *Filter) load(ctx context.Context, wasm []byte) error {
	if err := instantiateWASI(ctx, f.rt, f.log, f.cfg.RealClock); err != nil {
		return err
	}
	if err := instantiateHost(ctx, f.rt); err != nil {
		return err
	}
	compiled, err := f.rt.CompileModule(ctx, wasm)
	if err != nil {
		return fmt.Errorf("compiling: %w", err)
	}
	f.compiled = compiled
	if err := checkABI(compiled); err != nil {
		return err
	}
	exports := compiled.ExportedFunctions()
	_, f.hasStart = exports[exportStart]
	_, f.hasStatement = exports[exportStatement]
	_, f.hasEnd = exports[exportEnd]
	// No arguments, environment, file system or clock resolution beyond
	// what WASI's clock_time_get gives: the host module above decides.
	f.moduleConfig = wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize")
	f.startWatchdog()
	for i := range f.cfg.Instances {
		in, err := f.newInstance(ctx)
		if err != nil {
			return err
		}
		if i == 0 {
			if err := f.implemented(in); err != nil {
				in.close()
				return err
			}
		}
		f.pool.put(in)
	}
	return nil
}

// implemented asks a guest that exports sluice_hooks which of its exported
// hooks do something (an SDK exports them all), so that the host never
// calls the others: a session then costs no call for hooks it lacks.
func (f *Filter) implemented(in *instance) error {
	fn := in.mod.ExportedFunction(exportHooks)
	if fn == nil {
		return nil
	}
	if err := in.callWithin(fn, initTimeout); err != nil {
		return fmt.Errorf("%s: %w", exportHooks, err)
	}
	mask := uint32(in.stack[0])
	f.hasStart = f.hasStart && mask&hookBitStart != 0
	f.hasStatement = f.hasStatement && mask&hookBitStatement != 0
	f.hasEnd = f.hasEnd && mask&hookBitEnd != 0
	return nil
}

// ErrABI is wrapped by Load's error for a module that is not a filter of a
// supported ABI version.
var ErrABI = errors.New("unsupported filter ABI")

// checkABI checks the version marker, the required exports and the imports.
func checkABI(m wazero.CompiledModule) error {
	exports := m.ExportedFunctions()
	if _, ok := exports[abiMarker]; !ok {
		var found []string
		for name := range exports {
			if strings.HasPrefix(name, "sluice_abi_") {
				found = append(found, name)
			}
		}
		sort.Strings(found)
		if len(found) == 0 {
			return fmt.Errorf("%w: the module exports no sluice_abi_v* marker; this host speaks %s", ErrABI, abiMarker)
		}
		return fmt.Errorf("%w: the module exports %s; this host speaks %s", ErrABI, strings.Join(found, ", "), abiMarker)
	}
	want := map[string][]api.ValueType{
		exportScratch:   {api.ValueTypeI32},
		exportConfigure: nil,
		exportStart:     nil,
		exportStatement: {api.ValueTypeI32},
		exportEnd:       nil,
		exportHooks:     nil,
	}
	results := map[string][]api.ValueType{
		exportScratch:   {api.ValueTypeI32},
		exportConfigure: {api.ValueTypeI64},
		exportStart:     {api.ValueTypeI64},
		exportStatement: {api.ValueTypeI64},
		exportEnd:       nil,
		exportHooks:     {api.ValueTypeI32},
	}
	if _, ok := exports[exportScratch]; !ok {
		return fmt.Errorf("%w: the module does not export %s", ErrABI, exportScratch)
	}
	for name, params := range want {
		def, ok := exports[name]
		if !ok {
			continue
		}
		if !sameTypes(def.ParamTypes(), params) || !sameTypes(def.ResultTypes(), results[name]) {
			return fmt.Errorf("%w: %s has the wrong signature", ErrABI, name)
		}
	}
	if _, ok := m.ExportedMemories()["memory"]; !ok {
		return fmt.Errorf("%w: the module exports no memory", ErrABI)
	}
	for _, imp := range m.ImportedFunctions() {
		mod, name, _ := imp.Import()
		if mod != "sluice" && mod != "wasi_snapshot_preview1" {
			return fmt.Errorf("%w: the module imports %s.%s, which the host does not provide", ErrABI, mod, name)
		}
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Name returns the filter's name.
func (f *Filter) Name() string { return f.cfg.Name }

// Timeout is the filter's per-call timeout.
func (f *Filter) Timeout() time.Duration { return f.cfg.Timeout }

// Stats returns the filter's counts so far.
func (f *Filter) Stats() Stats {
	return Stats{
		Calls: f.stats.calls.Load(), Failures: f.stats.failures.Load(), Timeouts: f.stats.timeouts.Load(),
		Trips: f.stats.trips.Load(), Replaced: f.stats.replaced.Load(),
	}
}

// Counters returns a copy of the counters the filter keeps with
// counter_add (over every version of its name a reload loaded).
func (f *Filter) Counters() map[string]int64 { return f.m.counters.snapshot() }

// Close destroys every instance and the runtime. Calls in flight fail and
// their sessions get the failure policy. Close is idempotent.
func (f *Filter) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	f.bgCancel()
	f.wg.Wait()
	for _, in := range f.pool.drain() {
		in.close()
	}
	_ = f.rt.Close(context.Background())
	if f.cache != nil {
		_ = f.cache.Close(context.Background())
	}
}

// acquire takes a free instance, waiting at most KillAfter of the call
// timeout: by then every call in flight has ended or been stopped, so an
// instance comes back unless it died and is being replaced. Building an
// instance takes a few milliseconds (tens under the race detector or on a
// loaded machine), longer than a deadline, so while replacements are under
// way the call waits on for them, up to the bound on building one: a
// session whose statements keep killing instances costs the others a pause,
// never an error.
func (f *Filter) acquire() (*instance, error) {
	in, err := f.pool.get(KillAfter(f.cfg.Timeout), f.bg.Done())
	if errors.Is(err, ErrBusy) && f.building.Load() > 0 {
		in, err = f.pool.get(initTimeout, f.bg.Done())
	}
	return in, err
}

// release puts in back in the pool, or destroys and replaces it when it
// failed. A worn-out instance keeps serving until its replacement is ready,
// so that recycling never leaves the pool empty.
func (f *Filter) release(in *instance) {
	in.sess = nil
	switch {
	case in.dead:
		in.close()
		f.stats.replaced.Add(1)
		if !in.retiring { // else its replacement is already under way
			f.replace(nil)
		}
	case in.superseded.Load():
		in.close()
	case !in.retiring && in.worn():
		in.retiring = true
		f.stats.replaced.Add(1)
		f.replace(in)
		f.pool.put(in)
	default:
		f.pool.put(in)
	}
}

// replace builds a new instance in the background. With old, the new one
// supersedes it: old is closed when it next comes back.
func (f *Filter) replace(old *instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.wg.Add(1)
	f.building.Add(1) // counted for its first attempt only: callers wait for that one
	go func() {
		defer f.wg.Done()
		backoff := 50 * time.Millisecond
		time.Sleep(f.slowBuild)
		for first := true; ; first = false {
			in, err := f.newInstance(f.bg)
			if err == nil {
				if old != nil {
					old.superseded.Store(true)
				}
				f.pool.put(in)
			}
			if first {
				f.building.Add(-1)
			}
			if err == nil {
				return
			}
			if f.bg.Err() != nil {
				return
			}
			f.log.Error("cannot replace a filter instance", zap.Error(err))
			select {
			case <-f.bg.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

// failed records a failed call of a hook: it counts it, feeds the
// breaker, and logs.
func (f *Filter) failed(hook int, s *sessionState, err error) {
	f.stats.failures.Add(1)
	f.m.failed(hook, err)
	if errors.Is(err, ErrTimeout) {
		f.stats.timeouts.Add(1)
	}
	if errors.Is(err, ErrTripped) {
		return
	}
	if errors.Is(err, ErrBusy) {
		// Every instance was taken (or being replaced): a matter of
		// capacity, not a fault of the filter, so the breaker is not fed.
		f.log.Debug("no filter instance free", zap.String("hook", hookNames[hook]))
		return
	}
	if d := f.breaker.failure(s); d > 0 {
		f.stats.trips.Add(1)
		f.m.trips.Add(1)
		f.log.Error("filter keeps failing: skipping it", zap.String("hook", hookNames[hook]),
			zap.Duration("backoff", d), zap.Error(err))
		return
	}
	f.log.Warn("filter call failed", zap.String("hook", hookNames[hook]), zap.Error(err))
}

// begin takes an instance for a hook call on behalf of s.
func (f *Filter) begin(s *sessionState) (*instance, error) {
	f.stats.calls.Add(1)
	if !f.breaker.allow() {
		return nil, ErrTripped
	}
	in, err := f.acquire()
	if err != nil {
		return nil, err
	}
	in.sess = s
	return in, nil
}

// lateness counts a call of in that finished late.
func (f *Filter) lateness(hook int, in *instance) {
	if in.late {
		in.late = false
		f.m.hooks[hook].late.Add(1)
	}
}

// HookStats returns the counts of one hook (HookStatement, ...) of this
// filter's name, over every version a reload loaded.
func (f *Filter) HookStats(hook string) HookStats {
	for i, name := range hookNames {
		if name == hook {
			return f.m.hook(i)
		}
	}
	return HookStats{}
}

// sessionHook calls sluice_on_session_start (start) or _end for s. A
// start's answer (reject, or a cluster for the session) goes into v.
func (f *Filter) sessionHook(s *sessionState, start bool, v *verdict) error {
	*v = verdict{}
	if (start && !f.hasStart) || (!start && !f.hasEnd) {
		return nil
	}
	hook := hookEnd
	if start {
		hook = hookStart
	}
	t0 := time.Now()
	in, err := f.begin(s)
	if err == nil {
		if start {
			err = in.start1(v)
		} else {
			err = in.call(in.end)
		}
		f.lateness(hook, in)
		f.release(in)
	}
	f.m.observe(hook, time.Since(t0))
	if err != nil {
		f.failed(hook, s, err)
		return err
	}
	f.breaker.success()
	return nil
}

// start1 calls sluice_on_session_start and decodes its answer: only a
// reject or a cluster route are answers a session start may give.
func (in *instance) start1(v *verdict) error {
	if err := in.call(in.start); err != nil {
		return err
	}
	b, ok := in.result(in.stack[0])
	if !ok {
		in.dead = true
		return errBadOutput
	}
	if b == nil {
		return nil
	}
	o, err := decodeOutput(b)
	if err == nil && (o.route == routeWriter || o.route == routeReplica || o.action == actionRewrite || o.pin != pinKeep) {
		err = fmt.Errorf("%w: a session start may only reject or choose a cluster", errBadOutput)
	}
	if err != nil {
		in.dead = true
		return err
	}
	v.setFrom(in, o)
	return nil
}

// statement calls sluice_on_statement for st and decodes its answer into
// v. The answer's strings are copies, owned by the caller.
func (f *Filter) statement(s *sessionState, st *session.Statement, v *verdict) error {
	*v = verdict{}
	if !f.hasStatement {
		return nil
	}
	t0 := time.Now()
	in, err := f.begin(s)
	if err == nil {
		err = in.statement1(st, v, f.cfg.Timeout)
		f.lateness(hookStatement, in)
		f.release(in)
	}
	f.m.observe(hookStatement, time.Since(t0))
	if err != nil {
		f.failed(hookStatement, s, err)
		return err
	}
	f.breaker.success()
	return nil
}

func (in *instance) statement1(st *session.Statement, v *verdict, timeout time.Duration) error {
	n := inputSize(st)
	if err := in.ensureScratch(n); err != nil {
		return err
	}
	buf, ok := in.mod.Memory().Read(in.scratch, uint32(n))
	if !ok {
		in.dead = true
		return errBadOutput
	}
	encodeStatement(buf, st)
	in.stack[0] = uint64(n)
	if err := in.callWithin(in.statement, timeout); err != nil {
		return err
	}
	b, ok := in.result(in.stack[0])
	if !ok {
		in.dead = true
		return errBadOutput
	}
	if b == nil {
		return nil
	}
	o, err := decodeOutput(b)
	if err != nil {
		in.dead = true // a guest that writes garbage may be corrupt
		return err
	}
	v.setFrom(in, o)
	return nil
}

// setFrom copies o into v. The cluster name is kept on the instance, so
// that a filter naming the same cluster every time costs no allocation.
func (v *verdict) setFrom(in *instance, o output) {
	v.route, v.action, v.pin = o.route, o.action, o.pin
	if len(o.cluster) > 0 {
		if string(o.cluster) != in.cluster {
			in.cluster = string(o.cluster)
		}
		v.cluster = in.cluster
	}
	if len(o.code) > 0 {
		v.code = string(o.code)
	}
	if len(o.text) > 0 {
		v.text = string(o.text)
	}
	if len(o.pinR) > 0 {
		v.pinReason = string(o.pinR)
	}
}

// verdict is one filter's decoded answer for a statement.
type verdict struct {
	route, action, pin             byte
	cluster, code, text, pinReason string
}

// counters are a filter's named counters. Adding to one that exists takes
// a read lock and no allocation.
type counters struct {
	mu sync.RWMutex
	m  map[string]*atomic.Int64
}

func (c *counters) add(name []byte, d int64) bool {
	c.mu.RLock()
	v := c.m[string(name)]
	c.mu.RUnlock()
	if v == nil {
		c.mu.Lock()
		if v = c.m[string(name)]; v == nil {
			if len(c.m) >= maxCounters {
				c.mu.Unlock()
				return false
			}
			if c.m == nil {
				c.m = make(map[string]*atomic.Int64)
			}
			v = new(atomic.Int64)
			c.m[string(name)] = v
		}
		c.mu.Unlock()
	}
	v.Add(d)
	return true
}

func (c *counters) snapshot() map[string]int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v.Load()
	}
	return out
}
