package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// builder turns the merged, normalized tree into a Config. A value that
// cannot be converted is reported and leaves the default in place, so that
// Validate does not report the same key again.
type builder struct {
	// origin maps display paths to the variables that overrode them.
	origin   map[string]string
	problems []error
}

// problemf records a problem with the key at path, naming the variable
// that set it when it came from the environment.
func (b *builder) problemf(path, format string, args ...any) {
	msg := path + ": " + fmt.Sprintf(format, args...)
	if variable, ok := b.origin[path]; ok {
		msg += " (from " + variable + ")"
	}
	b.problems = append(b.problems, fmt.Errorf("%s", msg))
}

// config builds the Config; listenOrder and filterOrder give the order of
// the listeners and of the filters.
func (b *builder) config(tree map[string]any, listenOrder, filterOrder []string) *Config {
	cfg := Default()

	listeners := section(tree, "listen")
	for _, name := range listenOrder {
		body, ok := listeners[name].(map[string]any)
		if !ok {
			continue
		}
		cfg.Listeners = append(cfg.Listeners, b.listener(name, body))
	}

	b.pool(&cfg.Pool, section(tree, "pool"))

	clusters := section(tree, "cluster")
	for _, name := range sortedNames(clusters) {
		body, _ := clusters[name].(map[string]any)
		cfg.Clusters[name] = b.cluster(name, body)
	}

	auth := section(tree, "auth")
	b.str(&cfg.Auth.Method, "auth", auth, "method")
	users := section(auth, "user")
	for _, name := range sortedNames(users) {
		body, _ := users[name].(map[string]any)
		path := joinNamed("auth", "user", name)
		u := User{Name: name}
		b.str(&u.Password, path, body, "password")
		b.str(&u.BackendUser, path, body, "backend_user")
		b.str(&u.BackendPassword, path, body, "backend_password")
		if u.BackendUser == "" {
			u.BackendUser = name
		}
		cfg.Auth.Users[name] = u
	}

	pin := section(tree, "pinning")
	b.strList(&cfg.Pinning.Track, "pinning", pin, "track")
	b.str(&cfg.Pinning.OnSet, "pinning", pin, "on_set")
	b.integer(&cfg.Pinning.MaxPreparedStatements, "pinning", pin, "max_prepared_statements")
	b.integer(&cfg.Pinning.MaxClientPreparedStatements, "pinning", pin, "max_client_prepared_statements")

	admin := section(tree, "admin")
	b.str(&cfg.Admin.Address, "admin", admin, "address")
	b.boolean(&cfg.Admin.Pprof, "admin", admin, "pprof")
	if reg, ok := admin["register"].(map[string]any); ok {
		r := &Register{}
		b.str(&r.Service, "admin.register", reg, "service")
		b.rawList(&r.Tags, "admin.register", reg, "tags")
		b.str(&r.Consul, "admin.register", reg, "consul")
		b.str(&r.Token, "admin.register", reg, "token")
		b.str(&r.Address, "admin.register", reg, "address")
		b.duration(&r.CheckInterval, "admin.register", reg, "check_interval")
		cfg.Admin.Register = r
	}

	logs := section(tree, "log")
	b.str(&cfg.Log.Level, "log", logs, "level")
	b.str(&cfg.Log.Format, "log", logs, "format")

	filters := section(tree, "filter")
	for _, name := range filterOrder {
		body, ok := filters[name].(map[string]any)
		if !ok {
			continue
		}
		cfg.Filters = append(cfg.Filters, b.filter(name, body))
	}

	b.duration(&cfg.ShutdownTimeout, "", tree, "shutdown_timeout")
	b.str(&cfg.Engine, "", tree, "engine")
	b.integer(&cfg.EventLoops, "", tree, "event_loops")
	return cfg
}

// filter builds the filter block called name.
func (b *builder) filter(name string, body map[string]any) Filter {
	path := joinNamed("", "filter", name)
	f := Filter{Name: name, FailurePolicy: FailSafe, Timeout: DefaultFilterTimeout, MemoryLimit: DefaultFilterMemory, Config: []byte("{}")}
	b.str(&f.Module, path, body, "module")
	b.str(&f.FailurePolicy, path, body, "failure_policy")
	b.duration(&f.Timeout, path, body, "timeout")
	b.integer(&f.Instances, path, body, "instances")
	b.boolean(&f.RealClock, path, body, "real_clock")
	if v, ok := body["memory_limit"]; ok {
		n, err := parseBytes(v)
		if err != nil {
			b.problemf(join(path, "memory_limit"), "%v", err)
		} else {
			f.MemoryLimit = n
		}
	}
	if c, ok := body["config"]; ok {
		js, err := json.Marshal(c)
		if err != nil {
			b.problemf(join(path, "config"), "cannot be given to the filter as JSON: %v", err)
		} else {
			f.Config = js
		}
	}
	return f
}

// parseBytes reads a size: a whole number of bytes, or one with a unit
// (KiB, MiB, GiB; KB, MB, GB as powers of 1000).
func parseBytes(v any) (int64, error) {
	if n, ok := wholeNumber(v); ok {
		return int64(n), nil
	}
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("must be a size such as \"32MiB\", got %v", v)
	}
	s = strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 {
				break
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("must be a size such as \"32MiB\", got %q", s)
}

// listener builds the listen block called name.
func (b *builder) listener(name string, body map[string]any) Listener {
	path := joinNamed("", "listen", name)
	l := Listener{Name: name}
	b.str(&l.Address, path, body, "address")
	b.str(&l.Cluster, path, body, "cluster")
	var role string
	if b.str(&role, path, body, "role") {
		l.Role = Role(role)
	}
	b.boolean(&l.RequireTLS, path, body, "require_tls")
	if tls, ok := body["tls"].(map[string]any); ok {
		l.TLS = &TLS{}
		b.str(&l.TLS.CertFile, join(path, "tls"), tls, "cert_file")
		b.str(&l.TLS.KeyFile, join(path, "tls"), tls, "key_file")
	}
	return l
}

// cluster builds the cluster block called name.
func (b *builder) cluster(name string, body map[string]any) Cluster {
	path := joinNamed("", "cluster", name)
	c := Cluster{Name: name, TLS: ServerTLS{Mode: DefaultServerTLSMode}}
	b.str(&c.Writer, path, body, "writer")
	b.strList(&c.Replicas, path, body, "replicas")
	b.strList(&c.Hosts, path, body, "hosts")
	b.str(&c.MonitorUser, path, body, "monitor_user")
	b.str(&c.MonitorPassword, path, body, "monitor_password")
	b.duration(&c.HealthCheckInterval, path, body, "health_check_interval")
	var fb string
	if b.str(&fb, path, body, "reader_fallback") {
		c.ReaderFallback = ReaderFallback(fb)
	}
	var promo string
	if b.str(&promo, path, body, "promotion") {
		c.Promotion = Promotion(promo)
	}
	b.duration(&c.MaxReplicaLag, path, body, "max_replica_lag")
	b.integer(&c.MaxReplicaLagBytes, path, body, "max_replica_lag_bytes")
	b.boolean(&c.ReadYourWrites, path, body, "read_your_writes")
	b.duration(&c.ReadYourWritesWait, path, body, "read_your_writes_wait")
	if consul, ok := body["consul"].(map[string]any); ok {
		cp := join(path, "consul")
		k := &Consul{WriterTag: "primary", ReplicaTag: "replica"}
		b.str(&k.Address, cp, consul, "address")
		b.str(&k.Service, cp, consul, "service")
		b.str(&k.WriterTag, cp, consul, "writer_tag")
		b.str(&k.ReplicaTag, cp, consul, "replica_tag")
		b.str(&k.Datacenter, cp, consul, "datacenter")
		b.str(&k.Token, cp, consul, "token")
		if tls, ok := consul["tls"].(map[string]any); ok {
			tp := join(cp, "tls")
			k.TLS = &ConsulTLS{}
			b.str(&k.TLS.CAFile, tp, tls, "ca_file")
			b.str(&k.TLS.CertFile, tp, tls, "cert_file")
			b.str(&k.TLS.KeyFile, tp, tls, "key_file")
			b.str(&k.TLS.ServerName, tp, tls, "server_name")
			b.boolean(&k.TLS.InsecureSkipVerify, tp, tls, "insecure_skip_verify")
		}
		c.Consul = k
	}
	if tls, ok := body["tls"].(map[string]any); ok {
		var mode string
		if b.str(&mode, join(path, "tls"), tls, "mode") {
			c.TLS.Mode = ServerTLSMode(mode)
		}
		b.str(&c.TLS.CAFile, join(path, "tls"), tls, "ca_file")
		b.str(&c.TLS.ServerName, join(path, "tls"), tls, "server_name")
	}
	return c
}

// pool fills p from the pool block.
func (b *builder) pool(p *Pool, body map[string]any) {
	var mode string
	if b.str(&mode, "pool", body, "mode") {
		p.Mode = PoolMode(mode)
	}
	b.integer(&p.MaxConnections, "pool", body, "max_connections")
	p.MaxIdleConnections = p.MaxConnections
	b.integer(&p.MaxIdleConnections, "pool", body, "max_idle_connections")
	b.duration(&p.BorrowTimeout, "pool", body, "borrow_timeout")
	b.duration(&p.IdleClientTimeout, "pool", body, "idle_client_timeout")
	b.duration(&p.ServerIdleTimeout, "pool", body, "server_idle_timeout")
	b.duration(&p.ServerLifetime, "pool", body, "server_lifetime")
	b.duration(&p.ConnectTimeout, "pool", body, "connect_timeout")
	b.str(&p.InitQuery, "pool", body, "init_query")
	b.duration(&p.IdleInTransactionTimeout, "pool", body, "idle_in_transaction_timeout")
	b.duration(&p.QueryTimeout, "pool", body, "query_timeout")
	if r, ok := body["replica"].(map[string]any); ok {
		b.integer(&p.ReplicaMaxConnections, "pool.replica", r, "max_connections")
		p.ReplicaMaxIdleConnections = p.ReplicaMaxConnections
		b.integer(&p.ReplicaMaxIdleConnections, "pool.replica", r, "max_idle_connections")
	}
}

// str sets *dst to the string at body[name], if present, and reports
// whether it did.
func (b *builder) str(dst *string, path string, body map[string]any, name string) bool {
	v, ok := body[name]
	if !ok {
		return false
	}
	s, ok := v.(string)
	if !ok {
		b.problemf(join(path, name), "must be a quoted string, got %v", v)
		return false
	}
	*dst = s
	return true
}

// strList sets *dst to the list of strings at body[name], if present: a
// list from the file, or a comma-separated string from the environment.
// Names are lower-cased, as PostgreSQL parameter names are.
func (b *builder) strList(dst *[]string, path string, body map[string]any, name string) {
	b.list(dst, path, body, name, strings.ToLower)
}

// rawList is strList for values kept as written, such as Consul tags.
func (b *builder) rawList(dst *[]string, path string, body map[string]any, name string) {
	b.list(dst, path, body, name, func(s string) string { return s })
}

// list is strList and rawList, with norm applied to each element.
func (b *builder) list(dst *[]string, path string, body map[string]any, name string, norm func(string) string) {
	var out []string
	switch v := body[name].(type) {
	case nil:
		return
	case string:
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, norm(e))
			}
		}
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				b.problemf(join(path, name), "must be a list of quoted strings")
				return
			}
			out = append(out, norm(strings.TrimSpace(s)))
		}
	default:
		b.problemf(join(path, name), "must be a list of quoted strings")
		return
	}
	*dst = out
}

// boolean sets *dst to the boolean at body[name], if present.
func (b *builder) boolean(dst *bool, path string, body map[string]any, name string) {
	switch v := body[name].(type) {
	case nil:
	case bool:
		*dst = v
	case string:
		parsed, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			b.problemf(join(path, name), "must be true or false, got %q", v)
			return
		}
		*dst = parsed
	default:
		b.problemf(join(path, name), "must be true or false, got %v", v)
	}
}

// integer sets *dst to the whole number at body[name], if present. It
// accepts integers, whole floats and strings holding either.
func (b *builder) integer(dst *int, path string, body map[string]any, name string) {
	v, ok := body[name]
	if !ok {
		return
	}
	n, ok := wholeNumber(v)
	if !ok {
		if s, isString := v.(string); isString {
			b.problemf(join(path, name), "must be a whole number, got %q", s)
		} else {
			b.problemf(join(path, name), "must be a whole number, got %v", v)
		}
		return
	}
	*dst = n
}

// wholeNumber converts v to an int if it holds a whole number that fits.
func wholeNumber(v any) (int, bool) {
	switch v := v.(type) {
	case int:
		return v, true
	case int64:
		if v < math.MinInt || v > math.MaxInt {
			return 0, false
		}
		return int(v), true
	case float64:
		if v != math.Trunc(v) || v < math.MinInt || v >= math.MaxInt {
			return 0, false
		}
		return int(v), true
	case string:
		s := strings.TrimSpace(v)
		if n, err := strconv.Atoi(s); err == nil {
			return n, true
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, false
		}
		return wholeNumber(f)
	}
	return 0, false
}

// duration sets *dst to the duration at body[name], if present: a Go
// duration string, or a bare 0.
func (b *builder) duration(dst *time.Duration, path string, body map[string]any, name string) {
	v, ok := body[name]
	if !ok {
		return
	}
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			b.problemf(join(path, name), "must be a duration such as \"30s\" or \"5m\", got %q", v)
			return
		}
		*dst = d
	default:
		if n, ok := wholeNumber(v); ok && n == 0 {
			*dst = 0
			return
		}
		b.problemf(join(path, name), "must be a duration with a unit such as \"30s\", got %v", v)
	}
}

// section returns the map at body[name], or nil.
func section(body map[string]any, name string) map[string]any {
	m, _ := body[name].(map[string]any)
	return m
}
