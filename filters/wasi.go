package filters

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
	"go.uber.org/zap"
)

// WASI errno values used below.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
)

// instantiateWASI gives the runtime the WASI functions a Go guest needs and
// nothing else: no file system, no network, no environment (see ABI.md).
func instantiateWASI(ctx context.Context, r wazero.Runtime, log *zap.Logger, realClock bool) error {
	i32 := api.ValueTypeI32
	i64 := api.ValueTypeI64
	b := r.NewHostModuleBuilder("wasi_snapshot_preview1")
	fn := func(name string, f api.GoModuleFunc, params, results []api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(f, params, results).Export(name)
	}
	zeroSizes := func(_ context.Context, m api.Module, s []uint64) {
		if !m.Memory().WriteUint32Le(uint32(s[0]), 0) || !m.Memory().WriteUint32Le(uint32(s[1]), 0) {
			s[0] = errnoFault
			return
		}
		s[0] = errnoSuccess
	}
	nothing := func(_ context.Context, _ api.Module, s []uint64) { s[0] = errnoSuccess }
	fn("args_sizes_get", zeroSizes, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("args_get", nothing, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("environ_sizes_get", zeroSizes, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("environ_get", nothing, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("sched_yield", func(_ context.Context, _ api.Module, s []uint64) { s[0] = errnoSuccess },
		nil, []api.ValueType{i32})
	fn("clock_time_get", func(_ context.Context, m api.Module, s []uint64) {
		var t uint64
		switch uint32(s[0]) {
		case 0: // realtime: the epoch unless the filter asked for the clock
			if realClock {
				t = uint64(time.Now().UnixNano())
			}
		case 1: // monotonic
			t = uint64(time.Since(monotonicBase))
		default:
			s[0] = errnoInval
			return
		}
		if !m.Memory().WriteUint64Le(uint32(s[2]), t) {
			s[0] = errnoFault
			return
		}
		s[0] = errnoSuccess
	}, []api.ValueType{i32, i64, i32}, []api.ValueType{i32})
	fn("random_get", func(_ context.Context, m api.Module, s []uint64) {
		buf, ok := m.Memory().Read(uint32(s[0]), uint32(s[1]))
		if !ok {
			s[0] = errnoFault
			return
		}
		_, _ = rand.Read(buf)
		s[0] = errnoSuccess
	}, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("poll_oneoff", pollOneoff, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	fn("fd_write", func(ctx context.Context, m api.Module, s []uint64) {
		fd, iovs, n, written := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
		if fd != 1 && fd != 2 {
			s[0] = errnoBadf
			return
		}
		mem := m.Memory()
		var total uint32
		in := instanceFrom(ctx)
		for i := range n {
			p, ok1 := mem.ReadUint32Le(iovs + 8*i)
			l, ok2 := mem.ReadUint32Le(iovs + 8*i + 4)
			buf, ok3 := mem.Read(p, l)
			if !ok1 || !ok2 || !ok3 {
				s[0] = errnoFault
				return
			}
			if in != nil {
				in.output(buf)
			} else {
				log.Warn("filter output", zap.ByteString("text", bytes.TrimSpace(buf)))
			}
			total += l
		}
		if !mem.WriteUint32Le(written, total) {
			s[0] = errnoFault
			return
		}
		s[0] = errnoSuccess
	}, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	// What package os asks of file descriptors at start-up: stdin, stdout
	// and stderr exist (stdin is empty), nothing else does, and there are no
	// preopened directories, so no file can ever be opened.
	stdio := func(fd uint64) bool { return fd <= 2 }
	fn("fd_fdstat_get", func(_ context.Context, m api.Module, s []uint64) {
		if !stdio(s[0]) {
			s[0] = errnoBadf
			return
		}
		var st [24]byte
		st[0] = 2 // character device
		if !m.Memory().Write(uint32(s[1]), st[:]) {
			s[0] = errnoFault
			return
		}
		s[0] = errnoSuccess
	}, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("fd_fdstat_set_flags", func(_ context.Context, _ api.Module, s []uint64) {
		if stdio(s[0]) {
			s[0] = errnoSuccess
		} else {
			s[0] = errnoBadf
		}
	}, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("fd_read", func(_ context.Context, m api.Module, s []uint64) {
		if s[0] != 0 {
			s[0] = errnoBadf
			return
		}
		if !m.Memory().WriteUint32Le(uint32(s[3]), 0) { // end of file
			s[0] = errnoFault
			return
		}
		s[0] = errnoSuccess
	}, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32})
	badf := func(_ context.Context, _ api.Module, s []uint64) { s[0] = errnoBadf }
	fn("fd_close", badf, []api.ValueType{i32}, []api.ValueType{i32})
	fn("fd_prestat_get", badf, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("fd_prestat_dir_name", badf, []api.ValueType{i32, i32, i32}, []api.ValueType{i32})
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, s []uint64) {
		code := uint32(s[0])
		_ = m.CloseWithExitCode(ctx, code)
		panic(sys.NewExitError(code))
	}), []api.ValueType{i32}, nil).Export("proc_exit")
	_, err := b.Instantiate(ctx)
	return err
}

var monotonicBase = time.Now()

// pollOneoff answers every subscription at once: a filter cannot sleep or
// wait for input, so a guest that blocks spins until its deadline.
func pollOneoff(_ context.Context, m api.Module, s []uint64) {
	in, out, n, nevents := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	if n == 0 {
		s[0] = errnoInval
		return
	}
	mem := m.Memory()
	subs, ok1 := mem.Read(in, 48*n)
	events, ok2 := mem.Read(out, 32*n)
	if !ok1 || !ok2 {
		s[0] = errnoFault
		return
	}
	for i := range n {
		sub, ev := subs[48*i:48*i+48], events[32*i:32*i+32]
		clear(ev)
		copy(ev[0:8], sub[0:8]) // userdata
		ev[10] = sub[8]         // event type = subscription tag
		if sub[8] != 0 {        // fd_read / fd_write: no such descriptor
			binary.LittleEndian.PutUint16(ev[8:], errnoBadf)
		}
	}
	if !mem.WriteUint32Le(nevents, n) {
		s[0] = errnoFault
		return
	}
	s[0] = errnoSuccess
}
