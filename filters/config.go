package filters

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Failure policies a Config may name.
const (
	// FailSafe answers for a failed filter as if it had no opinion, except
	// that the statement goes to the writer: the classifier's pin is kept
	// and nothing is rewritten.
	FailSafe = "fail_safe"
	// FailClosed rejects the statement with SQLSTATE 58000 and a message
	// naming the filter.
	FailClosed = "fail_closed"
)

// Defaults of a Config.
const (
	DefaultTimeout     = 2 * time.Millisecond
	DefaultMemoryLimit = 32 << 20
	// DefaultMaxCalls is how many calls an instance serves before it is
	// replaced, since its linear memory only grows.
	DefaultMaxCalls = 100_000
)

// DefaultInstances is the default size of an instance pool: twice
// GOMAXPROCS, at least 4. More than one per core, because a session's
// goroutine can be descheduled while it holds an instance, and the others
// should not wait for it.
func DefaultInstances() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// Config says how to load one filter. It is read once by Load.
type Config struct {
	// Name names the filter in logs, metrics and error messages.
	Name string
	// Module is the path of the .wasm file.
	Module string
	// FailurePolicy is FailSafe (the default) or FailClosed.
	FailurePolicy string
	// Timeout bounds every call into the filter (default 2 ms).
	Timeout time.Duration
	// MemoryLimit caps an instance's linear memory in bytes (default 32 MiB;
	// at least 4 MiB, since a Go guest needs about 2).
	MemoryLimit int64
	// Instances is the size of the instance pool (default DefaultInstances).
	Instances int
	// MaxCalls is how many calls an instance serves before it is replaced
	// (default DefaultMaxCalls).
	MaxCalls int
	// RealClock gives the guest the wall clock; without it WASI's realtime
	// clock reads the Unix epoch (the monotonic clock runs either way).
	RealClock bool
	// Config is the filter's configuration, handed to it by config_get.
	Config []byte
	// CacheDir, when set, keeps compiled modules on disk so that a restart
	// compiles in milliseconds instead of a second.
	CacheDir string
}

// ErrConfig is wrapped by errors Load returns for an invalid Config.
var ErrConfig = errors.New("invalid filter config")

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		return c, fmt.Errorf("%w: name is empty", ErrConfig)
	}
	if c.Module == "" {
		return c, fmt.Errorf("%w: filter %q: module is empty", ErrConfig, c.Name)
	}
	switch c.FailurePolicy {
	case "":
		c.FailurePolicy = FailSafe
	case FailSafe, FailClosed:
	default:
		return c, fmt.Errorf("%w: filter %q: failure_policy %q is not %q or %q",
			ErrConfig, c.Name, c.FailurePolicy, FailSafe, FailClosed)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 {
		return c, fmt.Errorf("%w: filter %q: timeout %v is negative", ErrConfig, c.Name, c.Timeout)
	}
	if c.MemoryLimit == 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.MemoryLimit < 4<<20 || c.MemoryLimit > 4<<30 {
		return c, fmt.Errorf("%w: filter %q: memory_limit %d is not between 4 MiB and 4 GiB", ErrConfig, c.Name, c.MemoryLimit)
	}
	if c.Instances == 0 {
		c.Instances = DefaultInstances()
	}
	if c.Instances < 0 {
		return c, fmt.Errorf("%w: filter %q: instances %d is negative", ErrConfig, c.Name, c.Instances)
	}
	if c.MaxCalls == 0 {
		c.MaxCalls = DefaultMaxCalls
	}
	return c, nil
}
