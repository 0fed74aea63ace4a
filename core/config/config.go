package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Config is the whole proxy configuration. Load and Parse return a validated
// Config; after that it must not be modified, and it is safe for concurrent
// reads.
type Config struct {
	// Listeners are the client-facing listen blocks, in file order.
	Listeners []Listener
	// Pool holds the server connection pool settings shared by every pool.
	Pool Pool
	// Clusters are the cluster blocks, keyed by block name.
	Clusters map[string]Cluster
	// Auth holds how clients authenticate and as whom Sluice connects.
	Auth Auth
	// Pinning says which session state Sluice tracks and replays instead
	// of pinning a client to its server connection.
	Pinning Pinning
	// Admin holds the HTTP admin listener settings.
	Admin Admin
	// Filters are the filter blocks, in file order: the WebAssembly
	// filters every statement goes through, in that order.
	Filters []Filter
	// Log holds the logging settings.
	Log Log
	// Engine is how client connections are served (engine): EngineLoop,
	// event loops for plaintext clients (TLS clients keep a goroutine each),
	// or EngineGoroutine, a goroutine per client.
	Engine string
	// EventLoops is how many event loops the loop engine runs
	// (event_loops); 0 means one per two CPUs, at least one.
	EventLoops int
	// ShutdownTimeout is how long a graceful shutdown waits for sessions to
	// finish (shutdown_timeout). Zero means it does not wait.
	ShutdownTimeout time.Duration
}

// The engines (engine).
const (
	EngineLoop      = "loop"
	EngineGoroutine = "goroutine"
)

// Listener is one listen block: an address on which Sluice accepts
// PostgreSQL clients and the cluster it sends them to.
type Listener struct {
	// Name is the block name, as in listen "main".
	Name string
	// Address is the host:port to listen on (address).
	Address string
	// Cluster is the name of the cluster block clients are routed to.
	Cluster string
	// Role is where the listener's transactions go (role): RoleWriter
	// (also when empty), RoleReader for the cluster's replicas, or
	// RoleSplit for replicas when a transaction is read-only and the
	// writer otherwise.
	Role Role
	// RequireTLS rejects clients that do not negotiate TLS (require_tls).
	RequireTLS bool
	// TLS is the tls block, or nil when the listener does not offer TLS.
	TLS *TLS
}

// TLS is a tls block: the certificate a listener presents to clients.
type TLS struct {
	// CertFile is the path of the PEM certificate chain (cert_file).
	CertFile string
	// KeyFile is the path of the PEM private key (key_file).
	KeyFile string
}

// Role is a listener's role.
type Role string

// The listener roles.
const (
	RoleWriter Role = "writer"
	RoleReader Role = "reader"
	// RoleSplit sends read-only statements and READ ONLY transactions to
	// the replicas and everything else to the writer (transaction pooling
	// only).
	RoleSplit Role = "split"
)

// ReaderFallback says what a reader transaction does when no replica is
// usable.
type ReaderFallback string

// The reader fallbacks.
const (
	// FallbackWriter sends it to the writer (the default).
	FallbackWriter ReaderFallback = "writer"
	// FallbackWait waits up to borrow_timeout for a replica.
	FallbackWait ReaderFallback = "wait"
)

// PoolMode says when a server connection goes back to its pool.
type PoolMode string

// The pool modes accepted by pool.mode.
const (
	// ModeTransaction returns the server connection to the pool at the end
	// of each transaction, unless the session is pinned.
	ModeTransaction PoolMode = "transaction"
	// ModeSession keeps one server connection for the whole client session.
	ModeSession PoolMode = "session"
)

// Pool is the pool block. A pool is kept per (endpoint, database, backend
// user), and every pool uses these settings.
type Pool struct {
	// Mode is transaction or session pooling (mode).
	Mode PoolMode
	// MaxConnections caps the server connections of one pool
	// (max_connections).
	MaxConnections int
	// MaxIdleConnections caps the idle server connections kept by one pool
	// (max_idle_connections); it defaults to MaxConnections.
	MaxIdleConnections int
	// BorrowTimeout is how long a client waits for a server connection
	// before it gets an error (borrow_timeout).
	BorrowTimeout time.Duration
	// IdleClientTimeout closes client connections idle for this long
	// (idle_client_timeout); zero disables it.
	IdleClientTimeout time.Duration
	// ServerIdleTimeout closes server connections idle in the pool for this
	// long (server_idle_timeout); zero disables it.
	ServerIdleTimeout time.Duration
	// ServerLifetime closes server connections this old once they are
	// returned to the pool (server_lifetime); zero disables it.
	ServerLifetime time.Duration
	// ConnectTimeout bounds dialing and authenticating a new server
	// connection (connect_timeout).
	ConnectTimeout time.Duration
	// InitQuery is run once on every new server connection (init_query);
	// empty runs nothing.
	InitQuery string
	// IdleInTransactionTimeout ends a client session that holds a server
	// connection idle inside a transaction for this long, so that the
	// connection is freed (idle_in_transaction_timeout); zero disables it.
	IdleInTransactionTimeout time.Duration
	// QueryTimeout cancels a query that has run on the server for this
	// long (query_timeout); zero disables it.
	QueryTimeout time.Duration
	// ReplicaMaxConnections and ReplicaMaxIdleConnections size each
	// replica's pools (the replica block's max_connections and
	// max_idle_connections); zero means the same as the writer's.
	ReplicaMaxConnections, ReplicaMaxIdleConnections int
}

// Cluster is one cluster block: a set of PostgreSQL servers.
type Cluster struct {
	// Name is the block name, as in cluster "main".
	Name string
	// Writer is the host:port of the primary server (writer).
	Writer string
	// Replicas are the host:port of its read replicas (replicas).
	Replicas []string
	// ReaderFallback is what reader transactions do with no usable
	// replica (reader_fallback); empty means FallbackWriter.
	ReaderFallback ReaderFallback
	// Hosts, when set, are probed for their role (hosts): the one not in
	// recovery is the writer, the others replicas; Writer and Replicas
	// are then not used.
	Hosts []string
	// MonitorUser and MonitorPassword are the credentials of the probes
	// (monitor_user, monitor_password; the password may be a reference
	// such as env:NAME).
	MonitorUser, MonitorPassword string
	// HealthCheckInterval is the time between probes
	// (health_check_interval); zero means 1s.
	HealthCheckInterval time.Duration
	// TLS says whether and how Sluice encrypts its connections to the
	// cluster's servers (the tls block). Parse fills in Mode
	// DefaultServerTLSMode when the file leaves it out.
	TLS ServerTLS
	// Consul, when set, makes a Consul service the source of the
	// cluster's endpoints (the consul block); Writer, Replicas and Hosts
	// are then not used.
	Consul *Consul
	// Promotion says who names a new writer (promotion): PromotionProbe
	// takes the reachable server that is not in recovery as soon as the
	// probes find it; PromotionDiscovery waits for discovery (Consul, or
	// the writer key) to name it, and the probes only fence. Empty means
	// PromotionProbe with hosts and PromotionDiscovery otherwise; see
	// PromotionMode.
	Promotion Promotion
	// MaxReplicaLag takes a replica out of the reader pool while it
	// replays more than this far behind (max_replica_lag); zero means no
	// limit. It needs monitor_user: the probes measure the lag.
	MaxReplicaLag time.Duration
	// MaxReplicaLagBytes is the same limit in bytes of WAL behind the
	// writer (max_replica_lag_bytes); zero means no limit.
	MaxReplicaLagBytes int
	// ReadYourWrites routes a client's reads only to replicas that have
	// replayed its last commit (read_your_writes).
	ReadYourWrites bool
	// ReadYourWritesWait is how long such a read waits for a replica to
	// catch up before it goes to the writer (read_your_writes_wait);
	// zero means DefaultReadYourWritesWait.
	ReadYourWritesWait time.Duration
}

// PromotionMode returns the effective promotion setting.
func (c *Cluster) PromotionMode() Promotion {
	switch {
	case c.Promotion != "":
		return c.Promotion
	case len(c.Hosts) > 0:
		return PromotionProbe
	}
	return PromotionDiscovery
}

// Probed reports whether the cluster's endpoints are probed: whenever a
// monitor user is set (hosts require one).
func (c *Cluster) Probed() bool { return c.MonitorUser != "" }

// DefaultReadYourWritesWait is read_your_writes_wait's default.
const DefaultReadYourWritesWait = 100 * time.Millisecond

// Promotion is a cluster's promotion setting.
type Promotion string

// The promotion settings.
const (
	PromotionProbe     Promotion = "probe"
	PromotionDiscovery Promotion = "discovery"
)

// Consul is a cluster's consul block: the Consul service whose passing
// instances are the cluster's servers.
type Consul struct {
	// Address is the Consul agent's HTTP address, host:port or a URL
	// (address); empty means DefaultConsulAddress.
	Address string
	// Service is the service name the servers register (service).
	Service string
	// WriterTag and ReplicaTag are the tags that give an instance its
	// role (writer_tag, replica_tag; defaults "primary" and "replica"). A
	// service-meta key "role" with the value "writer" or "replica"
	// (or the tag values) does the same and wins over tags.
	WriterTag, ReplicaTag string
	// Datacenter is the datacenter to query; empty means the agent's.
	Datacenter string
	// Token is the ACL token, usually a reference such as env:NAME (token).
	Token string
	// TLS is the tls block for an https Consul address, or nil.
	TLS *ConsulTLS
}

// DefaultConsulAddress is where Sluice looks for a Consul agent.
const DefaultConsulAddress = "127.0.0.1:8500"

// ConsulTLS is a consul block's tls block.
type ConsulTLS struct {
	// CAFile verifies the agent's certificate (ca_file).
	CAFile string
	// CertFile and KeyFile are a client certificate (cert_file, key_file).
	CertFile, KeyFile string
	// ServerName is the name expected in the agent's certificate
	// (server_name).
	ServerName string
	// InsecureSkipVerify skips verification (insecure_skip_verify).
	InsecureSkipVerify bool
}

// ServerTLSMode is the value of a cluster's tls.mode. The modes mean what
// libpq's sslmode means; see
// https://www.postgresql.org/docs/15/libpq-ssl.html#LIBPQ-SSL-PROTECTION.
type ServerTLSMode string

// The modes accepted by a cluster's tls.mode.
const (
	// ServerTLSDisable connects in plaintext.
	ServerTLSDisable ServerTLSMode = "disable"
	// ServerTLSPrefer uses TLS when the server offers it and plaintext
	// otherwise, without verifying the server's certificate.
	ServerTLSPrefer ServerTLSMode = "prefer"
	// ServerTLSRequire insists on TLS but does not verify the server's
	// certificate.
	ServerTLSRequire ServerTLSMode = "require"
	// ServerTLSVerifyCA insists on TLS with a certificate signed by a CA in
	// ca_file, whatever name it carries.
	ServerTLSVerifyCA ServerTLSMode = "verify-ca"
	// ServerTLSVerifyFull is ServerTLSVerifyCA where the certificate must
	// also name the server: server_name, or else the host of writer.
	ServerTLSVerifyFull ServerTLSMode = "verify-full"
)

// DefaultServerTLSMode is the tls.mode of a cluster that does not set one,
// as libpq's default sslmode.
const DefaultServerTLSMode = ServerTLSPrefer

// ServerTLS is a cluster's tls block: how Sluice secures its connections
// to PostgreSQL.
type ServerTLS struct {
	// Mode is one of the ServerTLS modes (mode).
	Mode ServerTLSMode
	// CAFile is the path of the PEM certificates of the authorities that
	// verify-ca and verify-full trust (ca_file); required by those modes
	// and used by no other.
	CAFile string
	// ServerName is the name that verify-full expects in the server's
	// certificate and the name sent in TLS server name indication
	// (server_name); empty means the host of the cluster's writer.
	ServerName string
}

// Verifies reports whether the mode checks the server's certificate.
func (m ServerTLSMode) Verifies() bool {
	return m == ServerTLSVerifyCA || m == ServerTLSVerifyFull
}

// The authentication methods accepted by auth.method.
const (
	// MethodSCRAMSHA256 is SCRAM-SHA-256 authentication, the default.
	MethodSCRAMSHA256 = "scram-sha-256"
	// MethodMD5 is MD5 password authentication.
	MethodMD5 = "md5"
	// MethodPassword is clear-text password authentication.
	MethodPassword = "password"
	// MethodTrust accepts every client without a password.
	MethodTrust = "trust"
)

// Auth is the auth block: how clients authenticate to Sluice.
type Auth struct {
	// Method is one of the Method constants (method).
	Method string
	// Users are the user blocks, keyed by client user name.
	Users map[string]User
}

// User is one user block: a client user and the backend role it maps to.
type User struct {
	// Name is the client user name, the block name as in user "app".
	Name string
	// Password is the client password as written (password): plain text,
	// env:NAME, file:/path, an md5 hash or a SCRAM-SHA-256 verifier.
	Password string
	// BackendUser is the role Sluice uses on the server (backend_user); it
	// defaults to Name.
	BackendUser string
	// BackendPassword is the password of BackendUser as written
	// (backend_password), in the same forms as Password; empty when none
	// is configured.
	BackendPassword string
}

// Pinning is the pinning block.
type Pinning struct {
	// Track lists the parameters whose session-level SET and RESET are
	// recorded per client and replayed on the next server connection it
	// borrows, instead of pinning it (track).
	Track []string
	// OnSet is what a SET of a tracked parameter does: "track" (the
	// default) or "pin" (on_set).
	OnSet string
	// MaxPreparedStatements caps the protocol-level prepared statements
	// Sluice keeps on one server connection; the least recently used one is
	// closed beyond it (max_prepared_statements).
	MaxPreparedStatements int
	// MaxClientPreparedStatements caps the protocol-level named prepared
	// statements one client may hold at once in transaction mode
	// (max_client_prepared_statements).
	MaxClientPreparedStatements int
}

// The values of pinning.on_set.
const (
	OnSetTrack = "track"
	OnSetPin   = "pin"
)

// DefaultTrack is the default pinning.track list.
var DefaultTrack = []string{
	"search_path", "timezone", "datestyle", "intervalstyle", "application_name",
	"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
	"extra_float_digits", "client_min_messages", "work_mem",
}

// Filter is one filter block: a WebAssembly module that routes, rejects,
// rewrites or decides pinning (see filters/ABI.md).
type Filter struct {
	// Name is the block name, as in filter "readwrite".
	Name string
	// Module is the path of the .wasm file (module).
	Module string
	// FailurePolicy is FailSafe or FailClosed (failure_policy; default
	// FailSafe).
	FailurePolicy string
	// Timeout bounds each call into the filter (timeout; default
	// DefaultFilterTimeout).
	Timeout time.Duration
	// MemoryLimit is the most linear memory an instance may have, in bytes
	// (memory_limit, such as "32MiB"; default DefaultFilterMemory).
	MemoryLimit int64
	// Instances is the size of the filter's instance pool (instances);
	// zero means twice GOMAXPROCS, at least 4 (filters.DefaultInstances).
	Instances int
	// RealClock gives the filter the wall clock (real_clock = true);
	// without it the filter's wall clock reads the Unix epoch, so that a
	// decision cannot depend on the time of day unless the filter says so.
	RealClock bool
	// Config is the config block as JSON, handed to the filter ("{}" when
	// there is none).
	Config []byte
}

// The failure policies of a filter.
const (
	// FailSafe: a failing filter's statement goes to the writer, with the
	// core's pin decision and no rewrite.
	FailSafe = "fail_safe"
	// FailClosed: a failing filter's statement is rejected (58000).
	FailClosed = "fail_closed"
)

// Filter defaults.
const (
	DefaultFilterTimeout = 2 * time.Millisecond
	DefaultFilterMemory  = 32 << 20
)

// Admin is the admin block.
type Admin struct {
	// Address is the host:port of the HTTP admin listener (address); empty
	// disables it.
	Address string
	// Pprof serves Go's profiles (net/http/pprof) under /debug/pprof/
	// on the admin listener (pprof; off by default): CPU, heap,
	// goroutines, for diagnosing a running proxy.
	Pprof bool
	// Register, when set, registers this Sluice in Consul (the register
	// block); it needs Address, whose /healthz is the service's check.
	Register *Register
}

// Register is the admin block's register block: how a Sluice announces
// itself in Consul so that applications and other proxies find the fleet.
// Each listen block is one service instance, tagged with its role.
type Register struct {
	// Service is the service name (service); empty means "sluice".
	Service string
	// Tags are added to every instance (tags), with "writer" or "reader".
	Tags []string
	// Consul is the agent's HTTP address (consul); empty means the first
	// cluster's consul address, or DefaultConsulAddress.
	Consul string
	// Token is the ACL token (token), usually env:NAME.
	Token string
	// Address is the address advertised for the listeners when they listen
	// on a wildcard (address); empty lets the agent fill in its own.
	Address string
	// CheckInterval is how often Consul checks /healthz (check_interval);
	// zero means 2s.
	CheckInterval time.Duration
}

// Log is the log block.
type Log struct {
	// Level is debug, info, warn or error (level).
	Level string
	// Format is json or console (format).
	Format string
}

// fileName is the name Parse gives its input in error messages.
const fileName = "proxy.hcl"

// Default returns the configuration used for every key the file leaves out.
// It has no listeners, clusters or users, so it does not pass Validate by
// itself. Each call returns a new value that the caller owns.
func Default() *Config {
	return &Config{
		Pool: Pool{
			Mode:               ModeTransaction,
			MaxConnections:     20,
			MaxIdleConnections: 20,
			BorrowTimeout:      120 * time.Second,
			IdleClientTimeout:  30 * time.Minute,
			ServerIdleTimeout:  10 * time.Minute,
			ServerLifetime:     time.Hour,
			ConnectTimeout:     5 * time.Second,
		},
		Clusters: map[string]Cluster{},
		Auth: Auth{
			Method: MethodSCRAMSHA256,
			Users:  map[string]User{},
		},
		Pinning: Pinning{
			Track:                       append([]string(nil), DefaultTrack...),
			OnSet:                       OnSetTrack,
			MaxPreparedStatements:       100,
			MaxClientPreparedStatements: 1000,
		},
		Log: Log{
			Level:  "info",
			Format: "json",
		},
		ShutdownTimeout: 30 * time.Second,
		Engine:          EngineLoop,
	}
}

// Load reads the HCL file at path, applies the SLUICE_ overrides found in
// environ (usually os.Environ()) and validates the result. Errors name the
// file, the key or the variable at fault; see the package documentation.
func Load(path string, environ []string) (*Config, error) {
	src, err := file.Provider(path).ReadBytes()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return parse(path, src, environ)
}

// Parse is Load for a file already in memory; errors call it proxy.hcl.
func Parse(src []byte, environ []string) (*Config, error) {
	return parse(fileName, src, environ)
}

// parse decodes src, named name in syntax errors, applies the overrides in
// environ and validates the result.
func parse(name string, src []byte, environ []string) (*Config, error) {
	if err := checkSyntax(name, src); err != nil {
		return nil, err
	}
	decoded, err := decodeHCL(name, src)
	if err != nil {
		return nil, err
	}
	doc := normalize(decoded)
	overrides := readOverrides(environ, doc.tree)

	// Layer the file and the overrides with koanf; the maps are nested by
	// block name, so the delimiter only matters to koanf's flat key index.
	k := koanf.New(".")
	if err := k.Load(mapProvider(doc.tree), nil); err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	if err := k.Load(mapProvider(overrides.tree), nil); err != nil {
		return nil, fmt.Errorf("loading overrides: %w", err)
	}

	b := builder{origin: overrides.origin}
	cfg := b.config(k.Raw(), doc.listenOrder, doc.filterOrder)

	problems := append(doc.problems, overrides.problems...)
	problems = append(problems, b.problems...)
	problems = append(problems, cfg.validate()...)
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return cfg, nil
}

// mapProvider is a koanf.Provider that hands koanf an already nested map.
type mapProvider map[string]any

var _ koanf.Provider = mapProvider(nil)

// ReadBytes is not supported: a mapProvider has no bytes to parse.
func (m mapProvider) ReadBytes() ([]byte, error) {
	return nil, errors.New("config: mapProvider has no bytes")
}

// Read returns the map itself.
func (m mapProvider) Read() (map[string]any, error) {
	return m, nil
}
