package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// adminTimeout bounds the connection and statements pgtest runs on its own
// behalf (not those run through Exec, which the caller's context bounds).
const adminTimeout = 30 * time.Second

// connectAdmin connects to the postgres database as the superuser over the
// Unix socket, where authentication is always trust, so it works whatever
// AuthMethod and passwords are in effect. The caller must close the
// connection.
func (s *Server) connectAdmin(ctx context.Context) (*pgx.Conn, error) {
	q := url.Values{}
	q.Set("host", s.runDir)
	q.Set("port", strconv.Itoa(s.port))
	q.Set("sslmode", "disable")
	q.Set("application_name", "pgtest")
	u := url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/postgres", RawQuery: q.Encode()}
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("pgtest: connecting to server on port %d as %s: %w", s.port, Superuser, err)
	}
	return conn, nil
}

// Exec runs sql, with args as its parameters, in the postgres database as
// the superuser, on a connection of its own that is closed afterwards. Only
// one statement may be given when args are.
func (s *Server) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: executing %q: %w", abbreviate(sql), err)
	}
	return nil
}

// CreateRole creates a role that can log in with password. The password is
// stored according to the server's password_encryption: as a SCRAM-SHA-256
// verifier, or as an MD5 hash when Options.AuthMethod is AuthMD5.
func (s *Server) CreateRole(ctx context.Context, name, password string) error {
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	encryption := "scram-sha-256"
	if s.opts.AuthMethod == AuthMD5 {
		encryption = "md5"
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('password_encryption', $1, false)", encryption); err != nil {
		return fmt.Errorf("pgtest: creating role %q: setting password_encryption: %w", name, err)
	}
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN PASSWORD " + quoteLiteral(password)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: creating role %q: %w", name, err)
	}
	return nil
}

// CreateDatabase creates database name owned by owner, or by the superuser
// when owner is empty.
func (s *Server) CreateDatabase(ctx context.Context, name, owner string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if owner != "" {
		sql += " OWNER " + pgx.Identifier{owner}.Sanitize()
	}
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: creating database %q: %w", name, err)
	}
	return nil
}

// setSuperuserPassword sets the superuser's password from the options, for
// a reused data directory that may have been initialised with another one.
func (s *Server) setSuperuserPassword() error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sql := "ALTER ROLE " + pgx.Identifier{Superuser}.Sanitize() + " PASSWORD " + quoteLiteral(initdbPassword(s.opts))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: setting the superuser password: %w", err)
	}
	return nil
}

// recoveryState reports whether the server is in recovery and the status of
// its WAL receiver ("" when there is none).
func (s *Server) recoveryState(ctx context.Context) (inRecovery bool, receiver string, err error) {
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return false, "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = conn.QueryRow(ctx,
		"SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), '')",
	).Scan(&inRecovery, &receiver)
	if err != nil {
		return false, "", fmt.Errorf("pgtest: reading recovery state: %w", err)
	}
	return inRecovery, receiver, nil
}

// systemIdentifier returns the server's database system identifier, which
// a primary and its streaming replicas share.
func (s *Server) systemIdentifier(ctx context.Context) (string, error) {
	conn, err := s.connectAdmin(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var id string
	if err := conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_catalog.pg_control_system()").Scan(&id); err != nil {
		return "", fmt.Errorf("pgtest: reading the system identifier: %w", err)
	}
	return id, nil
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings
// is on in every supported PostgreSQL).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// abbreviate shortens sql for an error message.
func abbreviate(sql string) string {
	const limit = 80
	sql = strings.Join(strings.Fields(sql), " ")
	if len(sql) > limit {
		return sql[:limit] + "..."
	}
	return sql
}
