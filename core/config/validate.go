package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks c and returns every problem found, joined with
// errors.Join, or nil. Each problem starts with the full key it concerns,
// as in `pool.max_connections: must be at least 1, got 0`. Load and Parse
// call it; code that builds a Config itself should call it too. It opens
// the TLS certificate, key and CA files to check that they can be read,
// but does not parse them, and it does not modify c.
func (c *Config) Validate() error {
	return errors.Join(c.validate()...)
}

// validation collects the problems found by Validate.
type validation struct {
	problems []error
}

// problemf records a problem with the key at path.
func (v *validation) problemf(path, format string, args ...any) {
	v.problems = append(v.problems, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// validate returns every problem with c.
func (c *Config) validate() []error {
	v := &validation{}
	c.validateListeners(v)
	c.validateClusters(v)
	c.Pool.validate(v)
	c.Auth.validate(v)
	v.pinning(&c.Pinning)
	c.validateRegister(v)
	c.validateFilters(v)
	if c.Admin.Pprof && c.Admin.Address == "" {
		v.problemf("admin.pprof", "needs admin.address: the profiles are served there")
	}
	if c.Admin.Address != "" {
		v.listenAddress("admin.address", c.Admin.Address)
		for _, l := range c.Listeners {
			if l.Address == c.Admin.Address && !strings.HasSuffix(l.Address, ":0") { // port 0: each gets its own
				v.problemf("admin.address", "%q is already used by %s", c.Admin.Address, joinNamed("", "listen", l.Name))
			}
		}
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")
	v.atLeastZero("shutdown_timeout", c.ShutdownTimeout)
	v.oneOf("engine", c.Engine, EngineLoop, EngineGoroutine)
	if c.EventLoops < 0 || c.EventLoops > 64 {
		v.problemf("event_loops", "must be between 0 and 64, not %d", c.EventLoops)
	}
	return v.problems
}

// validateListeners checks the listen blocks.
func (c *Config) validateListeners(v *validation) {
	if len(c.Listeners) == 0 {
		v.problemf("listen", "at least one listen block is required")
	}
	names := map[string]bool{}
	addresses := map[string]string{}
	for _, l := range c.Listeners {
		path := joinNamed("", "listen", l.Name)
		if l.Name == "" {
			v.problemf(path, "the block name must not be empty")
		}
		if names[l.Name] {
			v.problemf(path, "defined more than once")
		}
		names[l.Name] = true

		if v.listenAddress(join(path, "address"), l.Address) {
			if other, dup := addresses[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") {
				v.problemf(join(path, "address"), "%q is already used by %s", l.Address, joinNamed("", "listen", other))
			} else {
				addresses[l.Address] = l.Name
			}
		}

		switch _, ok := c.Clusters[l.Cluster]; {
		case l.Cluster == "":
			v.problemf(join(path, "cluster"), "required")
		case !ok:
			v.problemf(join(path, "cluster"), "unknown cluster %q%s", l.Cluster, suggest(l.Cluster, sortedNames(c.Clusters)))
		}

		switch l.Role {
		case "", RoleWriter, RoleReader:
		case RoleSplit:
			if c.Pool.Mode == ModeSession {
				v.problemf(join(path, "role"), `"split" needs pool.mode = "transaction": a session-mode client keeps one server`)
			}
		default:
			v.oneOf(join(path, "role"), string(l.Role), string(RoleWriter), string(RoleReader), string(RoleSplit))
		}

		if l.TLS == nil {
			if l.RequireTLS {
				v.problemf(join(path, "require_tls"), "needs a tls block with cert_file and key_file")
			}
			continue
		}
		v.readableFile(join(path, "tls.cert_file"), l.TLS.CertFile)
		v.readableFile(join(path, "tls.key_file"), l.TLS.KeyFile)
	}
}

// validateClusters checks the cluster blocks.
func (c *Config) validateClusters(v *validation) {
	if len(c.Clusters) == 0 {
		v.problemf("cluster", "at least one cluster block is required")
	}
	for _, name := range sortedNames(c.Clusters) {
		cl := c.Clusters[name]
		path := joinNamed("", "cluster", name)
		if name == "" {
			v.problemf(path, "the block name must not be empty")
		}
		if cl.Name != name {
			v.problemf(path, "Name %q does not match the block name", cl.Name)
		}
		switch {
		case cl.Consul != nil:
			if cl.Writer != "" || len(cl.Replicas) > 0 || len(cl.Hosts) > 0 {
				v.problemf(join(path, "consul"), "cannot be combined with writer, replicas or hosts: Consul lists the servers")
			}
			v.consul(join(path, "consul"), cl.Consul)
		case len(cl.Hosts) > 0:
			if cl.Writer != "" || len(cl.Replicas) > 0 {
				v.problemf(join(path, "hosts"), "cannot be combined with writer or replicas: the probes find the roles")
			}
			if cl.MonitorUser == "" {
				v.problemf(join(path, "monitor_user"), "required with hosts")
			}
			for i, h := range cl.Hosts {
				v.address(fmt.Sprintf("%s[%d]", join(path, "hosts"), i), h)
			}
		default:
			v.address(join(path, "writer"), cl.Writer)
		}
		if cl.Promotion != "" {
			v.oneOf(join(path, "promotion"), string(cl.Promotion), string(PromotionProbe), string(PromotionDiscovery))
		}
		needMonitor := func(key, why string) {
			if cl.MonitorUser == "" {
				v.problemf(join(path, key), "needs monitor_user: %s", why)
			}
		}
		if cl.PromotionMode() == PromotionProbe {
			needMonitor("promotion", "the probes find the writer")
		}
		v.atLeastZero(join(path, "max_replica_lag"), cl.MaxReplicaLag)
		if cl.MaxReplicaLag > 0 {
			needMonitor("max_replica_lag", "the probes measure the lag")
		}
		if cl.MaxReplicaLagBytes < 0 {
			v.problemf(join(path, "max_replica_lag_bytes"), "must not be negative, got %d", cl.MaxReplicaLagBytes)
		} else if cl.MaxReplicaLagBytes > 0 {
			needMonitor("max_replica_lag_bytes", "the probes measure the lag")
		}
		v.atLeastZero(join(path, "read_your_writes_wait"), cl.ReadYourWritesWait)
		v.atLeastZero(join(path, "health_check_interval"), cl.HealthCheckInterval)
		for i, r := range cl.Replicas {
			v.address(fmt.Sprintf("%s[%d]", join(path, "replicas"), i), r)
		}
		if cl.ReaderFallback != "" && cl.ReaderFallback != FallbackWriter && cl.ReaderFallback != FallbackWait {
			v.oneOf(join(path, "reader_fallback"), string(cl.ReaderFallback), string(FallbackWriter), string(FallbackWait))
		}
		v.serverTLS(join(path, "tls"), cl.TLS)
	}
}

// consul checks a cluster's consul block, at path.
func (v *validation) consul(path string, k *Consul) {
	if k.Service == "" {
		v.problemf(join(path, "service"), "required: the Consul service the cluster's servers register")
	}
	if k.Address != "" {
		v.consulAddress(join(path, "address"), k.Address)
	}
	if k.WriterTag == "" || k.ReplicaTag == "" || k.WriterTag == k.ReplicaTag {
		v.problemf(join(path, "writer_tag"), "writer_tag and replica_tag must be set and differ, got %q and %q", k.WriterTag, k.ReplicaTag)
	}
	if t := k.TLS; t != nil {
		if t.CAFile != "" {
			v.readableFile(join(path, "tls.ca_file"), t.CAFile)
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			v.problemf(join(path, "tls"), "cert_file and key_file go together")
		} else if t.CertFile != "" {
			v.readableFile(join(path, "tls.cert_file"), t.CertFile)
			v.readableFile(join(path, "tls.key_file"), t.KeyFile)
		}
	}
}

// consulAddress checks a Consul agent address: host:port, or an http or
// https URL.
func (v *validation) consulAddress(path, s string) {
	if rest, ok := strings.CutPrefix(s, "http://"); ok {
		s = rest
	} else if rest, ok := strings.CutPrefix(s, "https://"); ok {
		s = rest
	} else if strings.Contains(s, "://") {
		v.problemf(path, "must be host:port or an http:// or https:// URL, got %q", s)
		return
	}
	v.address(path, strings.TrimSuffix(s, "/"))
}

// validateFilters checks the filter blocks.
func (c *Config) validateFilters(v *validation) {
	for _, f := range c.Filters {
		path := joinNamed("", "filter", f.Name)
		v.readableFile(join(path, "module"), f.Module)
		v.oneOf(join(path, "failure_policy"), f.FailurePolicy, FailSafe, FailClosed)
		v.aboveZero(join(path, "timeout"), f.Timeout)
		if f.MemoryLimit < 16<<20 || f.MemoryLimit > 4<<30 {
			v.problemf(join(path, "memory_limit"), "must be between 16MiB (a Go filter's minimum is about 2MiB, its runtime needs more) and 4GiB, got %d bytes", f.MemoryLimit)
		}
		if f.Instances < 0 {
			v.problemf(join(path, "instances"), "must not be negative, got %d", f.Instances)
		}
	}
}

// register checks the admin block's register block.
func (c *Config) validateRegister(v *validation) {
	r := c.Admin.Register
	if r == nil {
		return
	}
	if c.Admin.Address == "" {
		v.problemf("admin.register", "needs admin.address: Consul checks the admin /healthz")
	}
	if r.Consul != "" {
		v.consulAddress("admin.register.consul", r.Consul)
	}
	v.atLeastZero("admin.register.check_interval", r.CheckInterval)
}

// serverTLSModes are the values of a cluster's tls.mode, weakest first.
var serverTLSModes = []string{
	string(ServerTLSDisable), string(ServerTLSPrefer), string(ServerTLSRequire),
	string(ServerTLSVerifyCA), string(ServerTLSVerifyFull),
}

// serverTLS checks the tls block of a cluster, at path.
func (v *validation) serverTLS(path string, t ServerTLS) {
	if !slices.Contains(serverTLSModes, string(t.Mode)) {
		v.oneOf(join(path, "mode"), string(t.Mode), serverTLSModes...)
		return
	}
	switch {
	case t.Mode.Verifies() && t.CAFile == "":
		v.problemf(join(path, "ca_file"), "required when tls.mode is %q: the PEM file of the certificate authorities that sign the server's certificate", t.Mode)
	case t.Mode.Verifies():
		v.readableFile(join(path, "ca_file"), t.CAFile)
	case t.CAFile != "":
		v.problemf(join(path, "ca_file"), "only used when tls.mode is %q or %q; with %q the server's certificate is not verified",
			ServerTLSVerifyCA, ServerTLSVerifyFull, t.Mode)
	}
	if t.Mode == ServerTLSDisable && t.ServerName != "" {
		v.problemf(join(path, "server_name"), "has no effect when tls.mode is %q", t.Mode)
	}
}

// validate checks the pool block.
func (p *Pool) validate(v *validation) {
	v.oneOf("pool.mode", string(p.Mode), string(ModeTransaction), string(ModeSession))
	if p.MaxConnections < 1 {
		v.problemf("pool.max_connections", "must be at least 1, got %d", p.MaxConnections)
	}
	if p.MaxIdleConnections < 0 || p.MaxIdleConnections > max(p.MaxConnections, 0) {
		v.problemf("pool.max_idle_connections", "must be between 0 and pool.max_connections (%d), got %d",
			p.MaxConnections, p.MaxIdleConnections)
	}
	v.aboveZero("pool.borrow_timeout", p.BorrowTimeout)
	v.atLeastZero("pool.idle_client_timeout", p.IdleClientTimeout)
	v.atLeastZero("pool.server_idle_timeout", p.ServerIdleTimeout)
	v.atLeastZero("pool.server_lifetime", p.ServerLifetime)
	v.aboveZero("pool.connect_timeout", p.ConnectTimeout)
	v.atLeastZero("pool.idle_in_transaction_timeout", p.IdleInTransactionTimeout)
	v.atLeastZero("pool.query_timeout", p.QueryTimeout)
	if p.ReplicaMaxConnections < 0 {
		v.problemf("pool.replica.max_connections", "must not be negative, got %d", p.ReplicaMaxConnections)
	}
	if p.ReplicaMaxIdleConnections < 0 || p.ReplicaMaxIdleConnections > max(p.ReplicaMaxConnections, 0) {
		v.problemf("pool.replica.max_idle_connections", "must be between 0 and pool.replica.max_connections (%d), got %d",
			p.ReplicaMaxConnections, p.ReplicaMaxIdleConnections)
	}
}

// validate checks the auth block.
func (a *Auth) validate(v *validation) {
	v.oneOf("auth.method", a.Method, MethodSCRAMSHA256, MethodMD5, MethodPassword, MethodTrust)
	needPassword := a.Method != MethodTrust
	if needPassword && len(a.Users) == 0 {
		v.problemf("auth.user", "at least one user block is required when auth.method is %q", a.Method)
	}
	for _, name := range sortedNames(a.Users) {
		u := a.Users[name]
		path := joinNamed("auth", "user", name)
		if name == "" {
			v.problemf(path, "the block name must not be empty")
		}
		if u.Name != name {
			v.problemf(path, "Name %q does not match the block name", u.Name)
		}
		if needPassword && u.Password == "" {
			v.problemf(join(path, "password"), "required")
		}
		if u.BackendUser == "" {
			v.problemf(join(path, "backend_user"), "required")
		}
	}
}

// address checks that s is host:port with a port from 1 to 65535 and
// reports whether it is.
func (v *validation) address(path, s string) bool { return v.hostPort(path, s, 1) }

// listenAddress is address for a socket Sluice binds, where port 0 asks the
// system for a free port (for embedding and tests).
func (v *validation) listenAddress(path, s string) bool { return v.hostPort(path, s, 0) }

func (v *validation) hostPort(path, s string, minPort int) bool {
	if s == "" {
		v.problemf(path, "required")
		return false
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		v.problemf(path, "must be host:port, got %q", s)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < minPort || n > 65535 {
		v.problemf(path, "port must be a number from %d to 65535, got %q", minPort, port)
		return false
	}
	return true
}

// readableFile checks that name is set and is a file this process can
// open for reading.
func (v *validation) readableFile(path, name string) {
	if name == "" {
		v.problemf(path, "required")
		return
	}
	cannotRead := func(err error) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		v.problemf(path, "cannot read %q: %v", name, err)
	}
	info, err := os.Stat(name)
	switch {
	case err != nil:
		cannotRead(err)
	case info.IsDir():
		v.problemf(path, "%q is a directory, not a file", name)
	default:
		f, err := os.Open(name)
		if err != nil {
			cannotRead(err)
			return
		}
		f.Close()
	}
}

// oneOf checks that s is one of allowed.
func (v *validation) oneOf(path, s string, allowed ...string) {
	if slices.Contains(allowed, s) {
		return
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	v.problemf(path, "must be one of %s; got %q", strings.Join(quoted, ", "), s)
}

// atLeastZero checks that d is not negative.
func (v *validation) atLeastZero(path string, d time.Duration) {
	if d < 0 {
		v.problemf(path, "must not be negative, got %s", d)
	}
}

// aboveZero checks that d is positive.
func (v *validation) aboveZero(path string, d time.Duration) {
	if d <= 0 {
		v.problemf(path, "must be greater than 0, got %s", d)
	}
}

// sortedNames returns the keys of m in order.
func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// pinning checks the pinning block.
func (v *validation) pinning(p *Pinning) {
	if p.OnSet != OnSetTrack && p.OnSet != OnSetPin {
		v.problemf("pinning.on_set", "must be %q or %q, got %q", OnSetTrack, OnSetPin, p.OnSet)
	}
	if p.MaxPreparedStatements < 1 {
		v.problemf("pinning.max_prepared_statements", "must be at least 1, got %d", p.MaxPreparedStatements)
	}
	if p.MaxClientPreparedStatements < 1 {
		v.problemf("pinning.max_client_prepared_statements", "must be at least 1, got %d", p.MaxClientPreparedStatements)
	}
	for _, name := range p.Track {
		switch name {
		case "":
			v.problemf("pinning.track", "empty parameter name")
		case "role", "session_authorization":
			v.problemf("pinning.track", "%s cannot be tracked: SET ROLE and SET SESSION AUTHORIZATION always pin", name)
		}
	}
}
