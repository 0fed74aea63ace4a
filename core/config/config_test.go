package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Blocks of a minimal valid file, combined by hclFile().
const (
	baseListen  = `listen "main" { address = "127.0.0.1:6432"  cluster = "main" }`
	baseCluster = `cluster "main" { writer = "127.0.0.1:15432" }`
	baseAuth    = `auth { user "app" { password = "secret" } }`
)

// hclFile joins HCL blocks into one file.
func hclFile(blocks ...string) string {
	return strings.Join(blocks, "\n") + "\n"
}

// minimal returns the minimal valid file plus extra blocks.
func minimal(extra ...string) string {
	return hclFile(append([]string{baseListen, baseCluster, baseAuth}, extra...)...)
}

// clusterTLS returns a minimal file whose cluster has a tls block with
// settings.
func clusterTLS(settings string) string {
	return hclFile(baseListen, `cluster "main" {
  writer = "127.0.0.1:15432"
  tls {
    `+settings+`
  }
}`, baseAuth)
}

// tlsFiles creates a certificate and a key file (their contents are not
// checked here) and returns their paths.
func tlsFiles(t *testing.T) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, p := range []string{cert, key} {
		if err := os.WriteFile(p, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}

func TestParseFullFile(t *testing.T) {
	cert, key := tlsFiles(t)
	src := `
listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
  require_tls = true
  tls {
    cert_file = "` + cert + `"
    key_file  = "` + key + `"
  }
}
listen "reports" {
  address = "127.0.0.1:6433"
  cluster = "analytics"
}
pool {
  mode                 = "session"
  max_connections      = 40
  max_idle_connections = 10
  borrow_timeout       = "90s"
  idle_client_timeout  = "15m"
  server_idle_timeout  = "5m"
  server_lifetime      = "2h"
  init_query           = "SET application_name = 'sluice'"
  connect_timeout      = "3s"
  idle_in_transaction_timeout = "20s"
  query_timeout        = "1m"
}
cluster "main" {
  writer = "127.0.0.1:15432"
  tls {
    mode        = "verify-full"
    ca_file     = "` + cert + `"
    server_name = "db.example.com"
  }
}
cluster "analytics" {
  writer = "db.internal:5432"
}
auth {
  method = "md5"
  user "app" {
    password         = "env:SLUICE_APP_PASSWORD"
    backend_user     = "app_rw"
    backend_password = "file:/run/secrets/app"
  }
  user "report" {
    password = "md5d41d8cd98f00b204e9800998ecf8427e"
  }
}
admin {
  address = "127.0.0.1:9930"
}
log {
  level  = "debug"
  format = "console"
}
shutdown_timeout = "45s"
engine           = "loop"
event_loops      = 3
`
	got, err := Parse([]byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Listeners: []Listener{
			{Name: "main", Address: "127.0.0.1:6432", Cluster: "main", RequireTLS: true, TLS: &TLS{CertFile: cert, KeyFile: key}},
			{Name: "reports", Address: "127.0.0.1:6433", Cluster: "analytics"},
		},
		Pool: Pool{
			Mode:               ModeSession,
			MaxConnections:     40,
			MaxIdleConnections: 10,
			BorrowTimeout:      90 * time.Second,
			IdleClientTimeout:  15 * time.Minute,
			ServerIdleTimeout:  5 * time.Minute,
			ServerLifetime:     2 * time.Hour,
			ConnectTimeout:     3 * time.Second,
			InitQuery:          "SET application_name = 'sluice'",

			IdleInTransactionTimeout: 20 * time.Second,
			QueryTimeout:             time.Minute,
		},
		Clusters: map[string]Cluster{
			"main": {Name: "main", Writer: "127.0.0.1:15432",
				TLS: ServerTLS{Mode: ServerTLSVerifyFull, CAFile: cert, ServerName: "db.example.com"}},
			"analytics": {Name: "analytics", Writer: "db.internal:5432", TLS: ServerTLS{Mode: ServerTLSPrefer}},
		},
		Auth: Auth{
			Method: MethodMD5,
			Users: map[string]User{
				"app":    {Name: "app", Password: "env:SLUICE_APP_PASSWORD", BackendUser: "app_rw", BackendPassword: "file:/run/secrets/app"},
				"report": {Name: "report", Password: "md5d41d8cd98f00b204e9800998ecf8427e", BackendUser: "report"},
			},
		},
		Admin:           Admin{Address: "127.0.0.1:9930"},
		Log:             Log{Level: "debug", Format: "console"},
		Pinning:         Default().Pinning,
		ShutdownTimeout: 45 * time.Second,
		Engine:          EngineLoop,
		EventLoops:      3,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, want)
	}
	if got.Listeners[0].TLS == nil || *got.Listeners[0].TLS != *want.Listeners[0].TLS {
		t.Errorf("TLS = %+v, want %+v", got.Listeners[0].TLS, want.Listeners[0].TLS)
	}
}

func TestParseDefaults(t *testing.T) {
	got, err := Parse([]byte(minimal()), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	def := Default()
	if got.Pool != def.Pool {
		t.Errorf("Pool = %+v, want defaults %+v", got.Pool, def.Pool)
	}
	if got.Auth.Method != MethodSCRAMSHA256 || got.Log != def.Log || got.Admin != def.Admin || got.ShutdownTimeout != def.ShutdownTimeout {
		t.Errorf("defaults not applied: auth %q, log %+v, admin %+v, shutdown %s", got.Auth.Method, got.Log, got.Admin, got.ShutdownTimeout)
	}
	wantDefaults := Pool{
		Mode: ModeTransaction, MaxConnections: 20, MaxIdleConnections: 20,
		BorrowTimeout: 120 * time.Second, IdleClientTimeout: 30 * time.Minute,
		ServerIdleTimeout: 10 * time.Minute, ServerLifetime: time.Hour, ConnectTimeout: 5 * time.Second,
		IdleInTransactionTimeout: 0, QueryTimeout: 0,
	}
	if def.Pool != wantDefaults || def.Log != (Log{Level: "info", Format: "json"}) || def.ShutdownTimeout != 30*time.Second || def.Admin.Address != "" {
		t.Errorf("Default() = %+v", def)
	}
	l := got.Listeners[0]
	if l.RequireTLS || l.TLS != nil {
		t.Errorf("listener without tls: RequireTLS %v, TLS %+v", l.RequireTLS, l.TLS)
	}
	if u := got.Auth.Users["app"]; u.BackendUser != "app" || u.BackendPassword != "" {
		t.Errorf("user defaults: %+v, want backend_user = app and no backend_password", u)
	}
	if tls := got.Clusters["main"].TLS; tls != (ServerTLS{Mode: ServerTLSPrefer}) {
		t.Errorf("cluster without a tls block: TLS %+v, want mode \"prefer\" as libpq", tls)
	}
	if def.Pinning.MaxClientPreparedStatements != 1000 {
		t.Errorf("pinning.max_client_prepared_statements defaults to %d, want 1000", def.Pinning.MaxClientPreparedStatements)
	}
}

func TestParseClusterTLS(t *testing.T) {
	ca, _ := tlsFiles(t)
	withTLS := func(settings string) string {
		return hclFile(baseListen, `cluster "main" {
  writer = "db.internal:5432"
  tls {
    `+settings+`
  }
}`, baseAuth)
	}
	tests := []struct {
		name     string
		settings string
		want     ServerTLS
	}{
		{"empty block keeps the default", ``, ServerTLS{Mode: ServerTLSPrefer}},
		{"disable", `mode = "disable"`, ServerTLS{Mode: ServerTLSDisable}},
		{"require", `mode = "require"`, ServerTLS{Mode: ServerTLSRequire}},
		{"require with a server name for SNI", `mode = "require"
    server_name = "db.example.com"`, ServerTLS{Mode: ServerTLSRequire, ServerName: "db.example.com"}},
		{"verify-ca", `mode = "verify-ca"
    ca_file = "` + ca + `"`, ServerTLS{Mode: ServerTLSVerifyCA, CAFile: ca}},
		{"verify-full", `mode = "verify-full"
    ca_file = "` + ca + `"
    server_name = "db.example.com"`, ServerTLS{Mode: ServerTLSVerifyFull, CAFile: ca, ServerName: "db.example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(withTLS(tt.settings)), nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tls := got.Clusters["main"].TLS; tls != tt.want {
				t.Errorf("TLS = %+v, want %+v", tls, tt.want)
			}
		})
	}
}

func TestParseMaxIdleDefaultsToMaxConnections(t *testing.T) {
	got, err := Parse([]byte(minimal(`pool { max_connections = 50 }`)), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got.Pool.MaxConnections != 50 || got.Pool.MaxIdleConnections != 50 {
		t.Errorf("max_connections %d, max_idle_connections %d; want 50, 50", got.Pool.MaxConnections, got.Pool.MaxIdleConnections)
	}
}

func TestParseListenersInFileOrder(t *testing.T) {
	src := hclFile(
		`listen "zeta" { address = "127.0.0.1:7001"  cluster = "main" }`,
		`listen "alpha" { address = "127.0.0.1:7002"  cluster = "main" }`,
		`listen "mu" { address = "127.0.0.1:7003"  cluster = "main" }`,
		baseCluster, baseAuth)
	got, err := Parse([]byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var names []string
	for _, l := range got.Listeners {
		names = append(names, l.Name+"="+l.Address)
	}
	want := []string{"zeta=127.0.0.1:7001", "alpha=127.0.0.1:7002", "mu=127.0.0.1:7003"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("listeners = %v, want %v", names, want)
	}
}

func TestParseListenerRolesAndReadYourWrites(t *testing.T) {
	src := hclFile(
		`listen "w" { address = "127.0.0.1:7001"  cluster = "main" }`,
		`listen "r" { address = "127.0.0.1:7002"  cluster = "main"  role = "reader" }`,
		`listen "s" { address = "127.0.0.1:7003"  cluster = "main"  role = "split" }`,
		`cluster "main" {
  writer   = "127.0.0.1:5432"
  replicas = ["127.0.0.1:5433"]
  read_your_writes      = true
  read_your_writes_wait = "250ms"
}`, baseAuth)
	got, err := Parse([]byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var roles []Role
	for _, l := range got.Listeners {
		roles = append(roles, l.Role)
	}
	if want := []Role{"", RoleReader, RoleSplit}; !reflect.DeepEqual(roles, want) {
		t.Errorf("roles = %q, want %q", roles, want)
	}
	if cl := got.Clusters["main"]; !cl.ReadYourWrites || cl.ReadYourWritesWait != 250*time.Millisecond {
		t.Errorf("read_your_writes = %v, wait %v", cl.ReadYourWrites, cl.ReadYourWritesWait)
	}
}

func TestParseNumbersAndBooleans(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  int
	}{
		{"integer", `30`, 30},
		{"whole float", `30.0`, 30},
		{"quoted integer", `"30"`, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(minimal(`pool { max_connections = `+tt.value+` }`)), nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Pool.MaxConnections != tt.want {
				t.Errorf("max_connections = %d, want %d", got.Pool.MaxConnections, tt.want)
			}
		})
	}
	cert, key := tlsFiles(t)
	src := hclFile(`listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
  require_tls = "true"
  tls {
    cert_file = "`+cert+`"
    key_file = "`+key+`"
  }
}`, baseCluster, baseAuth)
	got, err := Parse([]byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !got.Listeners[0].RequireTLS {
		t.Error(`require_tls = "true" was not read as true`)
	}
}

func TestParseDurations(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration
	}{
		{`"90s"`, 90 * time.Second},
		{`"1h30m"`, 90 * time.Minute},
		{`"250ms"`, 250 * time.Millisecond},
		{`"0"`, 0},
		{`"0s"`, 0},
		{`0`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := Parse([]byte(minimal(`pool { idle_client_timeout = `+tt.value+` }`)), nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Pool.IdleClientTimeout != tt.want {
				t.Errorf("idle_client_timeout = %s, want %s", got.Pool.IdleClientTimeout, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cert, key := tlsFiles(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	withTLS := func(settings string) string {
		return hclFile(`listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
  `+settings+`
}`, baseCluster, baseAuth)
	}
	tests := []struct {
		name string
		src  string
		want []string // each must appear in the error
	}{
		// Listeners.
		{"no listener", hclFile(baseCluster, baseAuth),
			[]string{"listen: at least one listen block is required"}},
		{"listener without address", hclFile(`listen "main" { cluster = "main" }`, baseCluster, baseAuth),
			[]string{`listen "main".address: required`}},
		{"address without port", hclFile(`listen "main" { address = "localhost"  cluster = "main" }`, baseCluster, baseAuth),
			[]string{`listen "main".address: must be host:port, got "localhost"`}},
		{"writer port zero", hclFile(baseListen, `cluster "main" { writer = "127.0.0.1:0" }`, baseAuth),
			[]string{`cluster "main".writer: port must be a number from 1 to 65535, got "0"`}},
		{"port too large", hclFile(`listen "main" { address = "127.0.0.1:70000"  cluster = "main" }`, baseCluster, baseAuth),
			[]string{`listen "main".address: port must be a number from 0 to 65535, got "70000"`}},
		{"named port", hclFile(`listen "main" { address = "127.0.0.1:postgres"  cluster = "main" }`, baseCluster, baseAuth),
			[]string{`listen "main".address: port must be a number`}},
		{"two listeners on one address", hclFile(baseListen, `listen "b" { address = "127.0.0.1:6432"  cluster = "main" }`, baseCluster, baseAuth),
			[]string{`listen "b".address: "127.0.0.1:6432" is already used by listen "main"`}},
		{"unknown role", withTLS(`role = "primary"`),
			[]string{`listen "main".role: must be one of "writer", "reader", "split"; got "primary"`}},
		{"split in session mode", hclFile(`listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
  role    = "split"
}`, `pool { mode = "session" }`, baseCluster, baseAuth),
			[]string{`listen "main".role: "split" needs pool.mode = "transaction"`}},
		{"negative read_your_writes_wait", hclFile(baseListen, `cluster "main" {
  writer = "127.0.0.1:5432"
  read_your_writes_wait = "-1s"
}`, baseAuth),
			[]string{`cluster "main".read_your_writes_wait: must not be negative`}},
		{"listener without cluster", hclFile(`listen "main" { address = "127.0.0.1:6432" }`, baseCluster, baseAuth),
			[]string{`listen "main".cluster: required`}},
		{"listener with unknown cluster", hclFile(`listen "main" { address = "127.0.0.1:6432"  cluster = "mian" }`, baseCluster, baseAuth),
			[]string{`listen "main".cluster: unknown cluster "mian", did you mean "main"?`}},
		{"require_tls without tls", withTLS(`require_tls = true`),
			[]string{`listen "main".require_tls: needs a tls block`}},
		{"tls without cert_file", withTLS(`tls { key_file = "` + key + `" }`),
			[]string{`listen "main".tls.cert_file: required`}},
		{"tls without key_file", withTLS(`tls { cert_file = "` + cert + `" }`),
			[]string{`listen "main".tls.key_file: required`}},
		{"tls key_file missing", withTLS(`tls {
    cert_file = "` + cert + `"
    key_file = "` + missing + `"
  }`),
			[]string{`listen "main".tls.key_file: cannot read "` + missing + `": no such file or directory`}},
		{"tls cert_file is a directory", withTLS(`tls {
    cert_file = "` + filepath.Dir(cert) + `"
    key_file = "` + key + `"
  }`),
			[]string{`listen "main".tls.cert_file: "` + filepath.Dir(cert) + `" is a directory`}},

		// Clusters.
		{"no cluster", hclFile(baseListen, baseAuth),
			[]string{"cluster: at least one cluster block is required", `listen "main".cluster: unknown cluster "main"`}},
		{"cluster without writer", hclFile(baseListen, `cluster "main" {}`, baseAuth),
			[]string{`cluster "main".writer: required`}},
		{"cluster writer not host:port", hclFile(baseListen, `cluster "main" { writer = "db" }`, baseAuth),
			[]string{`cluster "main".writer: must be host:port, got "db"`}},

		// Pool.
		{"bad mode", minimal(`pool { mode = "statement" }`),
			[]string{`pool.mode: must be one of "transaction", "session"; got "statement"`}},
		{"max_connections zero", minimal(`pool { max_connections = 0 }`),
			[]string{`pool.max_connections: must be at least 1, got 0`}},
		{"max_connections not a number", minimal(`pool { max_connections = "abc" }`),
			[]string{`pool.max_connections: must be a whole number, got "abc"`}},
		{"max_connections fraction", minimal(`pool { max_connections = 1.5 }`),
			[]string{`pool.max_connections: must be a whole number, got 1.5`}},
		{"max_idle above max", minimal(`pool {
  max_connections = 10
  max_idle_connections = 11
}`),
			[]string{`pool.max_idle_connections: must be between 0 and pool.max_connections (10), got 11`}},
		{"max_idle negative", minimal(`pool { max_idle_connections = -1 }`),
			[]string{`pool.max_idle_connections: must be between 0 and pool.max_connections (20), got -1`}},
		{"borrow_timeout zero", minimal(`pool { borrow_timeout = "0s" }`),
			[]string{`pool.borrow_timeout: must be greater than 0, got 0s`}},
		{"connect_timeout zero", minimal(`pool { connect_timeout = 0 }`),
			[]string{`pool.connect_timeout: must be greater than 0, got 0s`}},
		{"idle_client_timeout negative", minimal(`pool { idle_client_timeout = "-1s" }`),
			[]string{`pool.idle_client_timeout: must not be negative, got -1s`}},
		{"server_idle_timeout negative", minimal(`pool { server_idle_timeout = "-1m" }`),
			[]string{`pool.server_idle_timeout: must not be negative, got -1m0s`}},
		{"server_lifetime negative", minimal(`pool { server_lifetime = "-1h" }`),
			[]string{`pool.server_lifetime: must not be negative, got -1h0m0s`}},
		{"duration without unit", minimal(`pool { server_lifetime = 60 }`),
			[]string{`pool.server_lifetime: must be a duration with a unit such as "30s", got 60`}},
		{"duration string without unit", minimal(`pool { borrow_timeout = "60" }`),
			[]string{`pool.borrow_timeout: must be a duration such as "30s" or "5m", got "60"`}},
		{"duration not a duration", minimal(`pool { borrow_timeout = "soon" }`),
			[]string{`pool.borrow_timeout: must be a duration such as "30s" or "5m", got "soon"`}},
		{"init_query not a string", minimal(`pool { init_query = 1 }`),
			[]string{`pool.init_query: must be a quoted string, got 1`}},
		{"idle_in_transaction_timeout negative", minimal(`pool { idle_in_transaction_timeout = "-1s" }`),
			[]string{`pool.idle_in_transaction_timeout: must not be negative, got -1s`}},
		{"query_timeout not a duration", minimal(`pool { query_timeout = "long" }`),
			[]string{`pool.query_timeout: must be a duration such as "30s" or "5m", got "long"`}},
		{"query_timeout negative", minimal(`pool { query_timeout = "-5m" }`),
			[]string{`pool.query_timeout: must not be negative, got -5m0s`}},

		// Cluster TLS.
		{"unknown tls mode", clusterTLS(`mode = "verify_full"`),
			[]string{`cluster "main".tls.mode: must be one of "disable", "prefer", "require", "verify-ca", "verify-full"; got "verify_full"`}},
		{"tls mode not a string", clusterTLS(`mode = true`),
			[]string{`cluster "main".tls.mode: must be a quoted string, got true`}},
		{"verify-full without ca_file", clusterTLS(`mode = "verify-full"`),
			[]string{`cluster "main".tls.ca_file: required when tls.mode is "verify-full": the PEM file of the certificate authorities`}},
		{"verify-ca without ca_file", clusterTLS(`mode = "verify-ca"`),
			[]string{`cluster "main".tls.ca_file: required when tls.mode is "verify-ca"`}},
		{"ca_file missing", clusterTLS(`mode = "verify-ca"
    ca_file = "` + missing + `"`),
			[]string{`cluster "main".tls.ca_file: cannot read "` + missing + `": no such file or directory`}},
		{"ca_file is a directory", clusterTLS(`mode = "verify-full"
    ca_file = "` + filepath.Dir(cert) + `"`),
			[]string{`cluster "main".tls.ca_file: "` + filepath.Dir(cert) + `" is a directory`}},
		{"ca_file with require", clusterTLS(`mode = "require"
    ca_file = "` + cert + `"`),
			[]string{`cluster "main".tls.ca_file: only used when tls.mode is "verify-ca" or "verify-full"; with "require" the server's certificate is not verified`}},
		{"ca_file with the default mode", clusterTLS(`ca_file = "` + cert + `"`),
			[]string{`cluster "main".tls.ca_file: only used when tls.mode is "verify-ca" or "verify-full"; with "prefer"`}},
		{"server_name with disable", clusterTLS(`mode = "disable"
    server_name = "db"`),
			[]string{`cluster "main".tls.server_name: has no effect when tls.mode is "disable"`}},
		{"misspelt key in a cluster tls block", clusterTLS(`ca_fil = "x"`),
			[]string{`unknown key cluster "main".tls.ca_fil, did you mean "ca_file"?`}},
		{"cluster tls given a value", hclFile(baseListen, `cluster "main" {
  writer = "127.0.0.1:15432"
  tls = "require"
}`, baseAuth),
			[]string{`cluster "main".tls: must be a block`}},

		// Auth.
		{"bad method", hclFile(baseListen, baseCluster, `auth {
  method = "ldap"
  user "app" { password = "x" }
}`),
			[]string{`auth.method: must be one of "scram-sha-256", "md5", "password", "trust"; got "ldap"`}},
		{"no users", hclFile(baseListen, baseCluster),
			[]string{`auth.user: at least one user block is required when auth.method is "scram-sha-256"`}},
		{"user without password", hclFile(baseListen, baseCluster, `auth {
  method = "password"
  user "app" { backend_user = "app_rw" }
}`),
			[]string{`auth.user "app".password: required`}},

		// Admin, log, shutdown.
		{"admin address not host:port", minimal(`admin { address = "9930" }`),
			[]string{`admin.address: must be host:port, got "9930"`}},
		{"admin address used by a listener", minimal(`admin { address = "127.0.0.1:6432" }`),
			[]string{`admin.address: "127.0.0.1:6432" is already used by listen "main"`}},
		{"bad log level", minimal(`log { level = "verbose" }`),
			[]string{`log.level: must be one of "debug", "info", "warn", "error"; got "verbose"`}},
		{"bad log format", minimal(`log { format = "text" }`),
			[]string{`log.format: must be one of "json", "console"; got "text"`}},
		{"negative shutdown_timeout", minimal(`shutdown_timeout = "-5s"`),
			[]string{`shutdown_timeout: must not be negative, got -5s`}},
		{"unknown engine", minimal(`engine = "threads"`),
			[]string{`engine: must be one of`}},
		{"too many event loops", minimal(`event_loops = 65`),
			[]string{`event_loops: must be between 0 and 64, not 65`}},
		{"require_tls not a boolean", withTLS(`require_tls = "maybe"`),
			[]string{`listen "main".require_tls: must be true or false, got "maybe"`}},
		{"address not a string", hclFile(`listen "main" { address = 6432  cluster = "main" }`, baseCluster, baseAuth),
			[]string{`listen "main".address: must be a quoted string, got 6432`}},

		// Unknown keys.
		{"misspelt pool key", minimal(`pool { max_conections = 5 }`),
			[]string{`unknown key "pool.max_conections", did you mean "max_connections"?`}},
		{"misspelt top-level block", hclFile(baseListen, baseCluster, baseAuth, `loq { level = "info" }`),
			[]string{`unknown key "loq", did you mean "log"?`}},
		{"misspelt key in a named block", hclFile(`listen "main" {
  adress = "127.0.0.1:6432"
  cluster = "main"
}`, baseCluster, baseAuth),
			[]string{`unknown key listen "main".adress, did you mean "address"?`, `listen "main".address: required`}},
		{"misspelt key in a nested block", withTLS(`tls { cert_fil = "x" }`),
			[]string{`unknown key listen "main".tls.cert_fil, did you mean "cert_file"?`}},
		{"misspelt key in a user block", hclFile(baseListen, baseCluster, `auth {
  user "app" {
    password = "x"
    backend_usr = "y"
  }
}`),
			[]string{`unknown key auth.user "app".backend_usr, did you mean "backend_user"?`}},

		// Shapes.
		{"setting written as a block", hclFile(`listen "main" {
  address { }
  cluster = "main"
}`, baseCluster, baseAuth),
			[]string{`listen "main".address: must be a value, not a block`}},
		{"setting given a list", minimal(`log { level = ["info"] }`),
			[]string{`log.level: must be a single value, not a list`}},
		{"block given a value", minimal(`pool = 5`),
			[]string{`pool: must be a block`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), nil)
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseUnknownKeyWithoutSuggestion(t *testing.T) {
	_, err := Parse([]byte(minimal(`frobnicate = 1`)), nil)
	if err == nil || err.Error() != `unknown key "frobnicate"` {
		t.Errorf("err = %v, want exactly: unknown key \"frobnicate\"", err)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	src := hclFile(baseListen, baseCluster, baseAuth,
		`pool {
  max_connections = 0
  mode = "sesion"
}`,
		`log { level = "loud" }`)
	_, err := Parse([]byte(src), nil)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Errorf("got %d problems, want 3:\n%v", len(lines), err)
	}
	for _, key := range []string{"pool.max_connections", "pool.mode", "log.level"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("no problem names %s:\n%v", key, err)
		}
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"unclosed block", "pool {\n  mode = \"session\"\n", []string{"proxy.hcl:"}},
		{"duplicate listen name", hclFile(baseListen, baseCluster, baseAuth, `listen "main" { address = "127.0.0.1:7000" cluster = "main" }`),
			[]string{`proxy.hcl:4:1: listen "main": defined more than once (first at line 1)`}},
		{"duplicate cluster name", hclFile(baseListen, baseCluster, baseAuth, `cluster "main" { writer = "127.0.0.1:1" }`),
			[]string{`proxy.hcl:4:1: cluster "main": defined more than once (first at line 2)`}},
		{"duplicate user name", hclFile(baseListen, baseCluster, `auth {
  user "app" { password = "a" }
  user "app" { password = "b" }
}`), []string{`proxy.hcl:5:3: auth.user "app": defined more than once (first at line 4)`}},
		{"duplicate pool block", minimal(`pool { mode = "session" }`, `pool { max_connections = 3 }`),
			[]string{`proxy.hcl:5:1: pool: defined more than once (first at line 4)`}},
		{"key set twice", minimal(`pool {
  max_connections = 3
  max_connections = 4
}`), []string{`proxy.hcl:6:3: pool.max_connections: defined more than once (first at line 5)`}},
		{"listen without a name", minimal(`listen { address = "127.0.0.1:1" }`),
			[]string{`proxy.hcl:4:1: listen: a listen block needs exactly one name, as in listen "main" { ... }`}},
		{"listen with two names", minimal(`listen "a" "b" { address = "127.0.0.1:1" }`),
			[]string{`proxy.hcl:4:1: listen: a listen block needs exactly one name`}},
		{"pool with a name", minimal(`pool "big" { max_connections = 3 }`),
			[]string{`proxy.hcl:4:1: pool: a pool block takes no name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), nil)
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseEnvironmentOverrides(t *testing.T) {
	src := hclFile(baseListen, baseCluster, `auth {
  user "App" { password = "env:SLUICE_APP_PASSWORD" }
}`)
	environ := []string{
		"PATH=/usr/bin",
		"SLUICE_APP_PASSWORD=not-an-override",
		"SLUICE_POOL__MAX_CONNECTIONS=50",
		"SLUICE_LOG__LEVEL=debug",
		"SLUICE_SHUTDOWN_TIMEOUT=5s",
		"SLUICE_CLUSTER__MAIN__WRITER=127.0.0.1:5433",
		"SLUICE_LISTEN__MAIN__ADDRESS=0.0.0.0:6432",
		"SLUICE_AUTH__USER__APP__BACKEND_USER=app_rw",
		"SLUICE_ADMIN__ADDRESS=127.0.0.1:9931",
		"SLUICE_POOL__IDLE_CLIENT_TIMEOUT=0",
		"SLUICE_POOL__IDLE_IN_TRANSACTION_TIMEOUT=45s",
		"SLUICE_POOL__QUERY_TIMEOUT=2m",
		"SLUICE_PINNING__MAX_CLIENT_PREPARED_STATEMENTS=50",
		"SLUICE_CLUSTER__MAIN__TLS__MODE=require",
		"SLUICE_CLUSTER__MAIN__TLS__SERVER_NAME=db.example.com",
	}
	got, err := Parse([]byte(src), environ)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"pool.max_connections", got.Pool.MaxConnections, 50},
		{"pool.max_idle_connections (follows max_connections)", got.Pool.MaxIdleConnections, 50},
		{"pool.idle_client_timeout", got.Pool.IdleClientTimeout, time.Duration(0)},
		{"log.level", got.Log.Level, "debug"},
		{"shutdown_timeout", got.ShutdownTimeout, 5 * time.Second},
		{`cluster "main".writer`, got.Clusters["main"].Writer, "127.0.0.1:5433"},
		{`listen "main".address`, got.Listeners[0].Address, "0.0.0.0:6432"},
		{`auth.user "App".backend_user`, got.Auth.Users["App"].BackendUser, "app_rw"},
		{`auth.user "App".password (untouched)`, got.Auth.Users["App"].Password, "env:SLUICE_APP_PASSWORD"},
		{"admin.address", got.Admin.Address, "127.0.0.1:9931"},
		{"log.format (not overridden)", got.Log.Format, "json"},
		{"pool.idle_in_transaction_timeout", got.Pool.IdleInTransactionTimeout, 45 * time.Second},
		{"pool.query_timeout", got.Pool.QueryTimeout, 2 * time.Minute},
		{"pinning.max_client_prepared_statements", got.Pinning.MaxClientPreparedStatements, 50},
		{`cluster "main".tls (the file has no tls block)`, got.Clusters["main"].TLS,
			ServerTLS{Mode: ServerTLSRequire, ServerName: "db.example.com"}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.key, c.got, c.want)
		}
	}
}

func TestParseEnvironmentOverrideErrors(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"unknown key", []string{"SLUICE_POOL__MAX_CONECTIONS=5"},
			[]string{`SLUICE_POOL__MAX_CONECTIONS: unknown key "pool.max_conections", did you mean "max_connections"?`}},
		{"unknown top-level key", []string{"SLUICE_POOLS__MODE=session"},
			[]string{`SLUICE_POOLS__MODE: unknown key "pools", did you mean "pool"?`}},
		{"unknown block name", []string{"SLUICE_CLUSTER__MIAN__WRITER=127.0.0.1:1"},
			[]string{`SLUICE_CLUSTER__MIAN__WRITER: no cluster "mian" in the configuration file, did you mean "main"?`}},
		{"block instead of key", []string{"SLUICE_POOL=x"},
			[]string{`SLUICE_POOL: pool is a block; set one of its keys`}},
		{"named block without key", []string{"SLUICE_LISTEN__MAIN=x"},
			[]string{`SLUICE_LISTEN__MAIN: listen needs a block name and a key`}},
		{"key below a setting", []string{"SLUICE_LOG__LEVEL__NAME=x"},
			[]string{`SLUICE_LOG__LEVEL__NAME: log.level is a setting, so nothing can follow it`}},
		{"empty segment", []string{"SLUICE_POOL____MODE=x"},
			[]string{`SLUICE_POOL____MODE: empty key between separators`}},
		{"not a number", []string{"SLUICE_POOL__MAX_CONNECTIONS=abc"},
			[]string{`pool.max_connections: must be a whole number, got "abc" (from SLUICE_POOL__MAX_CONNECTIONS)`}},
		{"invalid value", []string{"SLUICE_POOL__MAX_CONNECTIONS=0"},
			[]string{`pool.max_connections: must be at least 1, got 0`}},
		{"bad duration", []string{"SLUICE_SHUTDOWN_TIMEOUT=forever"},
			[]string{`shutdown_timeout: must be a duration such as "30s" or "5m", got "forever" (from SLUICE_SHUTDOWN_TIMEOUT)`}},
		{"two variables for one key", []string{"SLUICE_LOG__LEVEL=debug", "SLUICE_log__LEVEL=info"},
			[]string{`SLUICE_log__LEVEL: log.level is also set by SLUICE_LOG__LEVEL`}},
		{"bad query_timeout", []string{"SLUICE_POOL__QUERY_TIMEOUT=10"},
			[]string{`pool.query_timeout: must be a duration such as "30s" or "5m", got "10" (from SLUICE_POOL__QUERY_TIMEOUT)`}},
		{"unknown cluster tls key", []string{"SLUICE_CLUSTER__MAIN__TLS__SSLMODE=require"},
			[]string{`SLUICE_CLUSTER__MAIN__TLS__SSLMODE: unknown key cluster "main".tls.sslmode`}},
		{"cluster tls block instead of key", []string{"SLUICE_CLUSTER__MAIN__TLS=require"},
			[]string{`SLUICE_CLUSTER__MAIN__TLS: cluster "main".tls is a block; set one of its keys`}},
		{"unknown tls mode", []string{"SLUICE_CLUSTER__MAIN__TLS__MODE=verify"},
			[]string{`cluster "main".tls.mode: must be one of "disable", "prefer", "require", "verify-ca", "verify-full"; got "verify"`}},
		{"verify-full without ca_file", []string{"SLUICE_CLUSTER__MAIN__TLS__MODE=verify-full"},
			[]string{`cluster "main".tls.ca_file: required when tls.mode is "verify-full"`}},
		{"max_client_prepared_statements zero", []string{"SLUICE_PINNING__MAX_CLIENT_PREPARED_STATEMENTS=0"},
			[]string{`pinning.max_client_prepared_statements: must be at least 1, got 0`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal()), tt.environ)
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.hcl")
	if err := os.WriteFile(path, []byte(minimal()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, []string{"SLUICE_LOG__FORMAT=console"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Log.Format != "console" || cfg.Listeners[0].Address != "127.0.0.1:6432" {
		t.Errorf("Load = %+v", cfg)
	}

	if _, err := Load(filepath.Join(dir, "absent.hcl"), nil); err == nil || !strings.Contains(err.Error(), "absent.hcl") {
		t.Errorf("Load of a missing file: err = %v, want one naming the file", err)
	}

	broken := filepath.Join(dir, "broken.hcl")
	if err := os.WriteFile(broken, []byte("pool {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(broken, nil); err == nil || !strings.HasPrefix(err.Error(), broken+":") {
		t.Errorf("Load of a broken file: err = %v, want it to start with %q", err, broken+":")
	}
}

func TestValidateBuiltConfig(t *testing.T) {
	err := Default().Validate()
	if err == nil {
		t.Fatal("Default().Validate() succeeded; it has no listeners, clusters or users")
	}
	for _, key := range []string{"listen:", "cluster:", "auth.user:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s\n%v", key, err)
		}
	}

	cfg := Default()
	cfg.Listeners = []Listener{{Name: "main", Address: "127.0.0.1:6432", Cluster: "main"}}
	cfg.Clusters["main"] = Cluster{Name: "main", Writer: "127.0.0.1:5432", TLS: ServerTLS{Mode: DefaultServerTLSMode}}
	cfg.Auth.Method = MethodTrust
	if err := cfg.Validate(); err != nil {
		t.Errorf("trust without users: %v", err)
	}
	cfg.Clusters["main"] = Cluster{Name: "other", Writer: "127.0.0.1:5432"}
	cfg.Auth.Users["app"] = User{Name: "app"}
	err = cfg.Validate()
	for _, w := range []string{
		`cluster "main": Name "other" does not match the block name`,
		`auth.user "app".backend_user: required`,
		`cluster "main".tls.mode: must be one of "disable", "prefer", "require", "verify-ca", "verify-full"; got ""`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal(`pool {
  mode = "session"
  max_connections = 5
  borrow_timeout = "1s"
}`)), "SLUICE_POOL__MAX_CONNECTIONS=7")
	f.Add([]byte(`listen "a" "b" { tls { cert_file = 1 } } pool = [1, {}]`), "SLUICE_LISTEN__A__TLS__CERT_FILE=x")
	f.Add([]byte(minimal(`pool { query_timeout = "1s" }`)), "SLUICE_CLUSTER__MAIN__TLS__MODE=disable\nSLUICE_CLUSTER__MAIN__TLS__SERVER_NAME=x")
	f.Add([]byte(`{"pool": {"max_connections": 1e400}, "listen": [{"x": 1}]}`), "SLUICE_AUTH__USER__X__PASSWORD=\nSLUICE____=")
	f.Fuzz(func(t *testing.T, src []byte, env string) {
		cfg, err := Parse(src, strings.Split(env, "\n"))
		if err == nil {
			if cfg == nil {
				t.Fatal("Parse returned neither a Config nor an error")
			}
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted a Config that Validate rejects: %v", verr)
			}
		}
	})
}

func TestPinningBlock(t *testing.T) {
	base := baseListen + baseCluster + baseAuth
	cfg, err := Parse([]byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pinning.OnSet != OnSetTrack || cfg.Pinning.MaxPreparedStatements != 100 || cfg.Pinning.MaxClientPreparedStatements != 1000 ||
		len(cfg.Pinning.Track) != len(DefaultTrack) {
		t.Fatalf("defaults: %+v", cfg.Pinning)
	}
	cfg, err = Parse([]byte(base+`pinning {
  track = ["search_path", "TimeZone"]
  on_set = "pin"
  max_prepared_statements = 10
  max_client_prepared_statements = 20
}`), []string{"SLUICE_PINNING__MAX_PREPARED_STATEMENTS=12"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Pinning; got.OnSet != OnSetPin || got.MaxPreparedStatements != 12 || got.MaxClientPreparedStatements != 20 ||
		len(got.Track) != 2 || got.Track[1] != "timezone" {
		t.Fatalf("parsed: %+v", got)
	}
	cfg, err = Parse([]byte(base), []string{"SLUICE_PINNING__TRACK=work_mem, search_path"})
	if err != nil || len(cfg.Pinning.Track) != 2 || cfg.Pinning.Track[0] != "work_mem" {
		t.Fatalf("track from the environment: %+v %v", cfg, err)
	}
	for _, tc := range []struct{ src, want string }{
		{`pinning { on_set = "maybe" }`, `pinning.on_set: must be "track" or "pin", got "maybe"`},
		{`pinning { max_prepared_statements = 0 }`, `pinning.max_prepared_statements: must be at least 1`},
		{`pinning { max_client_prepared_statements = 0 }`, `pinning.max_client_prepared_statements: must be at least 1, got 0`},
		{`pinning { max_client_prepared_statements = "many" }`, `pinning.max_client_prepared_statements: must be a whole number, got "many"`},
		{`pinning { track = ["role"] }`, `pinning.track: role cannot be tracked`},
		{`pinning { track = "x" }`, ``},
		{`pinning { track = [1] }`, `pinning.track: must be a list of quoted strings`},
	} {
		_, err := Parse([]byte(base+tc.src), nil)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.src, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestAdminPprofNeedsAddress(t *testing.T) {
	_, err := Parse([]byte(`
listen "main" {
  address = "127.0.0.1:6432"
  cluster = "main"
}
cluster "main" {
  writer = "127.0.0.1:5432"
}
admin {
  pprof = true
}
`), nil)
	if err == nil || !strings.Contains(err.Error(), "admin.pprof") {
		t.Fatalf("admin.pprof without an address: %v", err)
	}
}
