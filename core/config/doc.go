// Package config loads, checks and describes the Sluice proxy configuration.
//
// The configuration is an HCL (version 1) file, conventionally proxy.hcl:
//
//	listen "main" {
//	  address     = "127.0.0.1:6432"
//	  cluster     = "main"
//	  require_tls = false                # optional; needs a tls block when true
//	  tls {                              # optional
//	    cert_file = "cert.pem"
//	    key_file  = "key.pem"
//	  }
//	}
//	pool {
//	  mode                 = "transaction" # or "session"
//	  max_connections      = 20            # per (endpoint, database, backend user); >= 1
//	  max_idle_connections = 20            # default max_connections; 0..max_connections
//	  borrow_timeout       = "120s"        # > 0
//	  idle_client_timeout  = "30m"         # 0 disables
//	  server_idle_timeout  = "10m"         # 0 disables
//	  server_lifetime      = "1h"          # 0 disables
//	  init_query           = ""            # run once on every new server connection
//	  connect_timeout      = "5s"          # dialing + authenticating; > 0
//	  idle_in_transaction_timeout = "0"    # end clients idle in a transaction; 0 disables
//	  query_timeout        = "0"           # cancel queries running longer; 0 disables
//	}
//	cluster "main" {
//	  writer = "127.0.0.1:15432"
//	  tls {                                # optional; as libpq's sslmode
//	    mode        = "prefer"             # disable | prefer | require | verify-ca | verify-full
//	    ca_file     = "ca.pem"             # required by, and only used by, verify-ca and verify-full
//	    server_name = "db.example.com"     # checked by verify-full; default the host of writer
//	  }
//	}
//	auth {
//	  method = "scram-sha-256"             # scram-sha-256 | md5 | password | trust
//	  user "app" {
//	    password         = "env:SLUICE_APP_PASSWORD"
//	    backend_user     = "app"           # default: the user's own name
//	    backend_password = "env:SLUICE_APP_BACKEND_PASSWORD"
//	  }
//	}
//	pinning {
//	  track                          = ["search_path", "timezone"] # default DefaultTrack
//	  on_set                         = "track" # or "pin"
//	  max_prepared_statements        = 100     # per server connection; >= 1
//	  max_client_prepared_statements = 1000    # named, per client in transaction mode; >= 1
//	}
//	admin {
//	  address = "127.0.0.1:9930"           # empty disables the admin listener
//	}
//	log {
//	  level  = "info"                      # debug | info | warn | error
//	  format = "json"                      # json | console
//	}
//	shutdown_timeout = "30s"
//	engine           = "loop"              # loop (event loops for plaintext clients) | goroutine
//	event_loops      = 0                   # loop engine: 0 is one per two CPUs
//
// The listen, cluster and user blocks may repeat; their names must be unique.
// Every other block and every key may appear at most once. Keys not listed
// above are errors, with a suggestion when a known key is within two edits.
// Durations are Go durations ("90s", "1h30m"); a bare 0 is also accepted.
// Default returns the value of every key that is left out.
//
// Passwords are kept exactly as written (plain text, env:NAME, file:/path, an
// md5 hash or a SCRAM-SHA-256 verifier); resolving them is not this
// package's job. Relative cert_file, key_file and ca_file paths are
// relative to the working directory of the process.
//
// # Environment overrides
//
// After the file is read, variables from the environment passed to [Load]
// or [Parse] override single keys. A variable is an override when its name
// starts with SLUICE_ and the rest of the name either contains a double
// underscore or equals a top-level key (SLUICE_SHUTDOWN_TIMEOUT). The rest is
// lowercased and split at each double underscore into the path of the key,
// block names included:
//
//	SLUICE_POOL__MAX_CONNECTIONS=50
//	SLUICE_LOG__LEVEL=debug
//	SLUICE_SHUTDOWN_TIMEOUT=5s
//	SLUICE_CLUSTER__MAIN__WRITER=127.0.0.1:5433
//	SLUICE_CLUSTER__MAIN__TLS__MODE=verify-full
//	SLUICE_LISTEN__MAIN__ADDRESS=0.0.0.0:6432
//	SLUICE_AUTH__USER__APP__BACKEND_USER=app_rw
//
// Every other SLUICE_ variable, such as SLUICE_APP_PASSWORD referenced by a
// password = "env:SLUICE_APP_PASSWORD", is ignored here. An override that
// names an unknown key, a block rather than a key, or a listen, cluster or
// user block that the file does not define is an error naming the variable:
// overrides change named blocks, they never create them, so a misspelt name
// cannot silently add a cluster. Names in the variable match block names
// without regard to case. Values are parsed like file values: "50" is a whole
// number, "true" a boolean, "5s" a duration.
//
// # Errors
//
// [Load] and [Parse] report syntax errors with the file name, line and column.
// Otherwise they report every problem at once, joined with [errors.Join], and
// each problem starts with the full key it concerns:
//
//	pool.max_connections: must be at least 1, got 0
//	listen "main".cluster: unknown cluster "x"
//	unknown key "pool.max_conections", did you mean "max_connections"?
//
// # Ownership
//
// A [Config] is built once by [Load] and must not be modified afterwards; it
// is then safe for concurrent reads. A reload builds a new Config and swaps it.
package config
