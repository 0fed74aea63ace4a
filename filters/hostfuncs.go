package filters

import (
	"context"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Limits of the host's per-session store and counters (see ABI.md).
const (
	maxKeyLen      = 256
	maxValueLen    = 4096
	maxKeys        = 64
	maxCounters    = 128
	maxCounterName = 64
)

// Session attribute keys of attr_get.
const (
	attrUser            = 1
	attrDatabase        = 2
	attrApplicationName = 3
	attrClientAddr      = 4
	attrListener        = 5
	attrTLS             = 6
)

// instantiateHost gives the runtime the "sluice" module. Each function finds
// the calling instance in the call's context.
func instantiateHost(ctx context.Context, r wazero.Runtime) error {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	b := r.NewHostModuleBuilder("sluice")
	fn := func(name string, f api.GoModuleFunc, params ...api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(f, params, []api.ValueType{i32}).Export(name)
	}
	fn("log", hostLog, i32, i32, i32)
	fn("config_get", hostConfigGet, i32, i32)
	fn("attr_get", hostAttrGet, i32, i32, i32)
	fn("kv_get", hostKVGet, i32, i32, i32, i32)
	fn("kv_set", hostKVSet, i32, i32, i32, i32)
	fn("kv_delete", hostKVDelete, i32, i32)
	fn("counter_add", hostCounterAdd, i32, i32, i64)
	_, err := b.Instantiate(ctx)
	return err
}

func status(s []uint64, v int32) { s[0] = uint64(uint32(v)) }

// putValue implements the *_get convention: write v at ptr when it fits in
// cap, and return its full length.
func putValue(m api.Module, s []uint64, ptr, capacity uint32, v []byte) {
	if len(v) <= int(capacity) && len(v) > 0 && !m.Memory().Write(ptr, v) {
		status(s, statusBadArgument)
		return
	}
	status(s, int32(len(v)))
}

func hostLog(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	level, ptr, n := int32(s[0]), uint32(s[1]), uint32(s[2])
	msg, ok := m.Memory().Read(ptr, n)
	if !ok || in == nil || level < 0 || level > 3 {
		status(s, statusBadArgument)
		return
	}
	lvl := [...]zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel}[level]
	if ce := in.f.log.Check(lvl, string(msg)); ce != nil {
		ce.Write()
	}
	status(s, statusOK)
}

func hostConfigGet(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	if in == nil {
		status(s, statusBadArgument)
		return
	}
	putValue(m, s, uint32(s[0]), uint32(s[1]), in.f.cfg.Config)
}

func hostAttrGet(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	if in == nil || in.sess == nil {
		status(s, statusNoSession)
		return
	}
	a := &in.sess.attrs
	var v string
	switch int32(s[0]) {
	case attrUser:
		v = a.User
	case attrDatabase:
		v = a.Database
	case attrApplicationName:
		v = a.ApplicationName
	case attrClientAddr:
		v = a.ClientAddr
	case attrListener:
		v = a.Listener
	case attrTLS:
		v = "off"
		if a.TLS {
			v = "on"
		}
	default:
		status(s, statusBadArgument)
		return
	}
	if v == "" {
		status(s, statusNotFound)
		return
	}
	putValue(m, s, uint32(s[1]), uint32(s[2]), []byte(v))
}

func hostKVGet(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	if in == nil || in.sess == nil {
		status(s, statusNoSession)
		return
	}
	k, ok := m.Memory().Read(uint32(s[0]), uint32(s[1]))
	if !ok {
		status(s, statusBadArgument)
		return
	}
	v, found := in.sess.kv[string(k)]
	if !found {
		status(s, statusNotFound)
		return
	}
	putValue(m, s, uint32(s[2]), uint32(s[3]), v)
}

func hostKVSet(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	if in == nil || in.sess == nil {
		status(s, statusNoSession)
		return
	}
	k, ok1 := m.Memory().Read(uint32(s[0]), uint32(s[1]))
	v, ok2 := m.Memory().Read(uint32(s[2]), uint32(s[3]))
	switch {
	case !ok1 || !ok2 || len(k) == 0:
		status(s, statusBadArgument)
		return
	case len(k) > maxKeyLen || len(v) > maxValueLen:
		status(s, statusLimit)
		return
	}
	kv := in.sess.kv
	if old, found := kv[string(k)]; found {
		kv[string(k)] = append(old[:0], v...)
		status(s, statusOK)
		return
	}
	if len(kv) >= maxKeys {
		status(s, statusLimit)
		return
	}
	kv[string(k)] = append([]byte(nil), v...)
	status(s, statusOK)
}

func hostKVDelete(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	if in == nil || in.sess == nil {
		status(s, statusNoSession)
		return
	}
	k, ok := m.Memory().Read(uint32(s[0]), uint32(s[1]))
	if !ok {
		status(s, statusBadArgument)
		return
	}
	delete(in.sess.kv, string(k))
	status(s, statusOK)
}

func hostCounterAdd(ctx context.Context, m api.Module, s []uint64) {
	in := instanceFrom(ctx)
	name, ok := m.Memory().Read(uint32(s[0]), uint32(s[1]))
	if !ok || in == nil || len(name) == 0 {
		status(s, statusBadArgument)
		return
	}
	if len(name) > maxCounterName {
		status(s, statusLimit)
		return
	}
	if in.probing {
		status(s, statusOK)
		return
	}
	if !in.f.m.counters.add(name, int64(s[2])) {
		status(s, statusLimit)
		return
	}
	status(s, statusOK)
}

// zapName is the logger field naming a filter.
func zapName(name string) zap.Field { return zap.String("filter", name) }
