package pgtest

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Superuser is the name of the bootstrap superuser of every server pgtest
// starts.
const Superuser = "postgres"

// DefaultSuperuserPassword is the superuser password used when
// Options.SuperuserPassword is empty.
const DefaultSuperuserPassword = "postgres"

// Auth methods accepted in Options.AuthMethod. They are written to
// pg_hba.conf for host connections from 127.0.0.1/32 and ::1/128.
const (
	// AuthSCRAM requires SCRAM-SHA-256 authentication; it is the default.
	AuthSCRAM = "scram-sha-256"
	// AuthMD5 requires MD5 authentication (SCRAM for roles whose password
	// is stored as a SCRAM verifier).
	AuthMD5 = "md5"
	// AuthTrust lets any loopback client in without a password.
	AuthTrust = "trust"
	// AuthPassword requires the password in clear text.
	AuthPassword = "password"
)

// Options configures a server started by [Start] or [StartServer]. The zero
// value is a valid configuration.
type Options struct {
	// SuperuserPassword is the password of the bootstrap superuser
	// "postgres". Empty means DefaultSuperuserPassword.
	SuperuserPassword string

	// AuthMethod is the pg_hba.conf method for host connections (ordinary
	// and replication) from 127.0.0.1/32 and ::1/128: AuthSCRAM (the
	// default when empty), AuthMD5, AuthTrust or AuthPassword. Connections
	// over the Unix socket are always trusted. With AuthMD5 the server's
	// password_encryption is md5, so the superuser's and created roles'
	// passwords are stored as MD5 hashes and clients really do MD5
	// authentication.
	AuthMethod string

	// Settings are extra postgresql.conf parameters, such as
	// {"max_connections": "200"}. They override pgtest's defaults. Values
	// are written quoted, so any value PostgreSQL accepts may be given
	// as is.
	Settings map[string]string

	// DataDir, if set, is used as the data directory instead of a fresh
	// temporary one: it is initialised if it holds no cluster yet and reused
	// as it is otherwise, and it is kept when the server stops (it is shut
	// down cleanly then). The server log is written to pgtest.log inside it.
	// When running as root, every ancestor of DataDir must be searchable by
	// the unprivileged user.
	DataDir string

	// Port is the TCP port to listen on 127.0.0.1. Zero picks a free port
	// (and retries with another one if it is taken before the server binds
	// it).
	Port int

	// TLS, when set, turns ssl on: the server offers TLS to clients that
	// ask for it, with this certificate. pgtest writes the certificate and
	// key into the data directory on every start, owned by the user that
	// runs PostgreSQL and readable by it alone (the server refuses a key
	// others can read). Clients that do not ask for TLS still connect in
	// plaintext. Nil leaves ssl off.
	TLS *TLS
}

// withDefaults returns a copy of o with empty fields filled in and checks
// that the values are usable.
func (o Options) withDefaults() (Options, error) {
	if o.SuperuserPassword == "" {
		o.SuperuserPassword = DefaultSuperuserPassword
	}
	if strings.ContainsAny(o.SuperuserPassword, "\r\n") {
		return o, fmt.Errorf("pgtest: Options.SuperuserPassword must not contain a line break")
	}
	switch o.AuthMethod {
	case "":
		o.AuthMethod = AuthSCRAM
	case AuthSCRAM, AuthMD5, AuthTrust, AuthPassword:
	default:
		return o, fmt.Errorf("pgtest: Options.AuthMethod %q is not one of %q, %q, %q, %q",
			o.AuthMethod, AuthSCRAM, AuthMD5, AuthTrust, AuthPassword)
	}
	for name := range o.Settings {
		if !validSettingName(name) {
			return o, fmt.Errorf("pgtest: Options.Settings key %q is not a PostgreSQL parameter name", name)
		}
	}
	if o.Port < 0 || o.Port > 65535 {
		return o, fmt.Errorf("pgtest: Options.Port %d is out of range", o.Port)
	}
	if o.TLS != nil {
		if err := o.TLS.check(); err != nil {
			return o, err
		}
	}
	settings := make(map[string]string, len(o.Settings))
	for k, v := range o.Settings {
		settings[k] = v
	}
	o.Settings = settings
	return o, nil
}

// validSettingName reports whether name can be a (possibly
// extension-qualified) configuration parameter name.
func validSettingName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// serverConfig renders pgtest.conf, which postgresql.conf includes last: the
// per-start values (port, socket directory) and the defaults, then the
// caller's settings.
func serverConfig(o Options, port int, socketDir string) string {
	var b strings.Builder
	b.WriteString("# Written by pgtest on every start; edits are lost.\n")
	line := func(name, value string) {
		fmt.Fprintf(&b, "%s = %s\n", name, quoteConfValue(value))
	}
	line("listen_addresses", "127.0.0.1")
	line("port", fmt.Sprint(port))
	line("unix_socket_directories", socketDir)
	line("fsync", "off")
	line("synchronous_commit", "off")
	line("full_page_writes", "off")
	line("max_connections", "300")
	line("shared_buffers", "32MB")
	line("wal_level", "replica")
	line("max_wal_senders", "10")
	line("hot_standby", "on")
	line("logging_collector", "off")
	if o.AuthMethod == AuthMD5 {
		line("password_encryption", "md5")
	} else {
		line("password_encryption", "scram-sha-256")
	}
	if o.TLS != nil {
		line("ssl", "on")
		line("ssl_cert_file", serverCertFile)
		line("ssl_key_file", serverKeyFile)
	}
	names := make([]string, 0, len(o.Settings))
	for name := range o.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		line(name, o.Settings[name])
	}
	return b.String()
}

// quoteConfValue quotes v as a postgresql.conf string value.
func quoteConfValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// hbaConfig renders pg_hba.conf: trust over the Unix socket, method over
// loopback TCP, for ordinary and replication connections alike.
func hbaConfig(method string) string {
	return "# Written by pgtest on every start; edits are lost.\n" +
		"local all         all              trust\n" +
		"host  all         all 127.0.0.1/32 " + method + "\n" +
		"host  all         all ::1/128      " + method + "\n" +
		"local replication all              trust\n" +
		"host  replication all 127.0.0.1/32 " + method + "\n" +
		"host  replication all ::1/128      " + method + "\n"
}

// initdbPassword is what goes into initdb's password file. For AuthMD5 it is
// the password already hashed the way PostgreSQL stores MD5 passwords, which
// the server keeps as given, so the superuser can do real MD5
// authentication; otherwise it is the password itself, stored as SCRAM.
func initdbPassword(o Options) string {
	if o.AuthMethod != AuthMD5 {
		return o.SuperuserPassword
	}
	sum := md5.Sum([]byte(o.SuperuserPassword + Superuser))
	return "md5" + hex.EncodeToString(sum[:])
}
