package sdk

import (
	"bytes"
	"encoding/json"
)

// Session is the client session a hook runs for. Its methods call the host;
// the values they return are copies, owned by the caller. It is valid only
// during the hook.
type Session struct{ _ struct{} }

// Attribute keys of attr_get.
const (
	attrUser            = 1
	attrDatabase        = 2
	attrApplicationName = 3
	attrClientAddr      = 4
	attrListener        = 5
	attrTLS             = 6
)

// User returns the user the client logged in as.
func (Session) User() string { return attr(attrUser) }

// Database returns the database the client connected to.
func (Session) Database() string { return attr(attrDatabase) }

// ApplicationName returns the client's application_name, or "".
func (Session) ApplicationName() string { return attr(attrApplicationName) }

// ClientAddr returns the client's address, host:port.
func (Session) ClientAddr() string { return attr(attrClientAddr) }

// Listener returns the name of the listener the client came through.
func (Session) Listener() string { return attr(attrListener) }

// TLS reports whether the client connected with TLS.
func (Session) TLS() bool { return attr(attrTLS) == "on" }

// Get returns the session's value for key from the host's store.
func (Session) Get(key string) (string, bool) { return kvGet(key) }

// Set keeps value for key for the rest of the session, on the host (keys
// up to 256 bytes, values up to 4096, 64 keys). It reports whether the host
// took it.
func (Session) Set(key, value string) bool { return kvSet(key, value) }

// Delete forgets key.
func (Session) Delete(key string) { kvDelete(key) }

// Config is the filter's configuration, as given in Sluice's config.
type Config struct{ raw []byte }

// Bytes returns the configuration as given (JSON, possibly empty).
func (c Config) Bytes() []byte { return c.raw }

// Decode unmarshals the JSON configuration into v; an empty one leaves v
// unchanged. Unknown fields are an error.
func (c Config) Decode(v any) error {
	if len(c.raw) == 0 {
		return nil
	}
	return decodeStrict(c.raw, v)
}

func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// Level is the severity of a Log message.
type Level int32

// The levels of Log.
const (
	Debug Level = iota
	Info
	Warn
	Error
)

// Log writes msg to Sluice's log with the filter's name.
func Log(level Level, msg string) { hostLog(level, msg) }

// Count adds delta to the filter's counter called name (up to 128 names of
// up to 64 bytes), which Sluice shows in its metrics.
func Count(name string, delta int64) { counterAdd(name, delta) }
