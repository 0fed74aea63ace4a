// Package pgtest starts throwaway PostgreSQL servers for tests, benchmarks and
// `make run`.
//
// Each [Server] gets its own short temporary directory under /tmp holding the
// data directory, the server log and the Unix socket, and listens on a free
// loopback port, so any number of servers can run at once in one test binary
// and across the test binaries that `go test ./...` runs in parallel. Servers
// are tuned for speed rather than durability (fsync, synchronous_commit and
// full_page_writes are off).
//
// PostgreSQL refuses to run as root. When the calling process is root (as in
// CI), pgtest runs initdb, pg_ctl, postgres and pg_basebackup as the
// unprivileged "postgres" system user, or "nobody" if there is no such user,
// and hands the directories it creates to that user. A non-root caller runs
// them as itself.
//
// The binaries are looked up in $PGTEST_BINDIR, then in `pg_config --bindir`,
// then in /usr/lib/postgresql/15/bin.
//
// A typical test:
//
//	func TestProxy(t *testing.T) {
//		srv := pgtest.Start(t, pgtest.Options{AuthMethod: "md5"})
//		ctx := context.Background()
//		if err := srv.CreateRole(ctx, "app", "secret"); err != nil {
//			t.Fatal(err)
//		}
//		if err := srv.CreateDatabase(ctx, "appdb", "app"); err != nil {
//			t.Fatal(err)
//		}
//		conn, err := pgx.Connect(ctx, srv.ConnString("app", "secret", "appdb"))
//		// ...
//		replica := srv.AddReplica(t) // a streaming hot standby of srv
//		// ...
//	}
//
// A server can offer TLS. [NewCA] makes a throwaway certificate authority in
// memory and [CA.ServerTLS] a server certificate for the names a client will
// check; the CA's CertPEM is what a client's root certificate file holds:
//
//	ca, err := pgtest.NewCA()
//	// ...
//	cert, err := ca.ServerTLS("localhost", "127.0.0.1")
//	// ...
//	srv := pgtest.Start(t, pgtest.Options{TLS: cert}) // ssl = on
//	os.WriteFile(caFile, ca.CertPEM, 0o600)          // sslmode=verify-full sslrootcert=caFile
//
// The server is stopped and its directory removed when the test ends, whether
// it passed, failed or panicked. Code outside tests uses [StartServer] and
// must call [Server.Stop] itself.
package pgtest
