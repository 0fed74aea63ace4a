package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/auth"
	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// Serve runs the session until the client disconnects, ctx ends, or the
// proxy kills it. Every failure a client should see is sent to it as an
// ErrorResponse here, in one place. Serve closes the client connection.
func (s *Session) Serve(ctx context.Context) {
	defer s.conn.Close()
	err := s.login(ctx)
	if err == nil {
		err = s.relay(ctx)
	}
	s.cleanup()
	if err == nil {
		s.log.Debug("client disconnected")
		return
	}
	if isDisconnect(err) || errors.Is(err, errQuiet) {
		s.log.Debug("client connection ended", zap.Error(err))
		return
	}
	we := wire.AsError(err)
	if we.Code == wire.CodeInternalError {
		s.log.Error("session failed", zap.Error(err))
	} else {
		s.log.Info("session ended", zap.String("sqlstate", we.Code), zap.Error(err))
	}
	s.conn.SetWriteDeadline(timeNowPlus(writeGrace))
	s.cw.WriteMessage(we.Encode(nil))
}

// isDisconnect reports errors that mean the client went away.
func isDisconnect(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &ne) && !errors.Is(err, os.ErrDeadlineExceeded))
}

// transport adapts the client side of a session to auth.Transport.
type transport struct{ s *Session }

func (t transport) ReadMessage() (byte, []byte, error) { return t.s.cr.ReadMessage() }
func (t transport) WriteMessage(b []byte) error        { return t.s.cw.WriteMessage(b) }

// login authenticates the client, applies its startup parameters on a
// server connection and sends the replies PostgreSQL would send.
func (s *Session) login(ctx context.Context) error {
	st := s.startup
	s.user, _ = st.Get("user")
	if s.user == "" {
		return wire.Fatalf(wire.CodeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	database, ok := st.Get("database")
	if !ok || database == "" {
		database = s.user
	}
	s.database = database
	s.log = s.log.With(zap.String("user", s.user), zap.String("database", database))

	params, unknownOpts, err := startupParams(st)
	if err != nil {
		return err
	}
	if st.ProtocolMinor > 0 || len(unknownOpts) > 0 {
		if err := s.cw.WriteMessage(wire.AppendNegotiateProtocolVersion(nil, 0, unknownOpts)); err != nil {
			return err
		}
	}

	u := s.env.LookupUser(s.user)
	var secret *auth.Secret
	if u != nil {
		secret = u.Secret
	}
	err = auth.AuthenticateClient(transport{s}, s.env.AuthMethod, s.user, secret)
	if err == nil && u == nil {
		// trust: the user is still unknown, and Sluice has no credentials for it.
		err = auth.ErrAuthFailed
	}
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrProtocol):
		return wire.Fatalf(wire.CodeProtocolViolation, "invalid authentication message").Wrap(err)
	case isDisconnect(err):
		return err
	default:
		return wire.Fatalf(wire.CodeInvalidPassword, "password authentication failed for user %q", s.user).Wrap(err)
	}

	// The startup deadline the proxy set covers authentication only.
	s.conn.SetDeadline(time.Time{})

	p, err := s.env.Pool(u, database)
	if err != nil {
		return err
	}
	s.pool = p
	srv, err := p.Borrow(ctx)
	if err != nil {
		return fatal(err)
	}
	// The server's defaults overlaid with the client's values, under the
	// names the server uses: a previous borrower's values never show.
	s.params = make(map[string]string, len(srv.Reported)+len(params))
	for name, v := range srv.Reported {
		if !fixed[name] {
			s.params[name] = v
		}
	}
	for _, kv := range params {
		s.params[canonicalName(srv, kv.Name)] = kv.Value
	}
	if err := s.syncParams(srv); err != nil {
		s.giveBack(srv, err)
		return fatal(err)
	}
	// Keep the server's spelling of the values it reports (UTC for utc).
	for name := range s.params {
		if _, reported := srv.Reported[name]; reported {
			s.params[name] = srv.Params[name]
		}
	}
	s.paramsKey = ""
	srv.ParamsKey = s.fingerprint()
	if s.params["standard_conforming_strings"] == "off" {
		// The classifier reads strings as PostgreSQL does with it on; with
		// it off, backslashes could hide a statement from it.
		s.mu.Lock()
		s.pinLocked(reasonBit(sqlclass.ReasonUnknown))
		s.mu.Unlock()
	}
	s.startParams = make(map[string]string, len(s.params))
	for k, v := range s.params {
		s.startParams[k] = v
	}

	out := wire.AppendAuthenticationOk(nil)
	for name := range srv.Reported {
		out = wire.AppendParameterStatus(out, name, srv.Params[name])
	}
	out = wire.AppendBackendKeyData(out, s.key.ProcessID, s.key.SecretKey)
	out = wire.AppendReadyForQuery(out, wire.TxIdle)

	if s.env.Mode == ModeSession {
		s.mu.Lock()
		s.pinLocked(pinSessionMode)
		s.server = srv
		s.mu.Unlock()
	} else {
		p.Return(srv)
	}
	s.log.Info("client logged in")
	return s.cw.WriteMessage(out)
}

// fatal turns an error that ends a login into a FATAL for the client.
func fatal(err error) error {
	var we *wire.Error
	if errors.As(err, &we) && !we.Fatal() {
		c := *we
		c.Severity = wire.SeverityFatal
		return &c
	}
	return err
}

// giveBack returns srv to its pool after a failed exchange: intact after a
// SQL error, discarded after anything else.
func (s *Session) giveBack(srv *pool.Conn, err error) {
	var we *wire.Error
	if errors.As(err, &we) && errors.Is(err, pool.ErrServer) {
		s.pool.Return(srv)
		return
	}
	s.pool.Discard(srv)
}

// startupParams returns the run-time parameters a client set in its
// startup packet, directly or with -c in "options", and the protocol
// options (_pq_.*) Sluice does not recognise.
func startupParams(st *wire.Startup) ([]wire.Param, []string, error) {
	var out []wire.Param
	var unknown []string
	for _, p := range st.Params {
		switch {
		case p.Name == "user" || p.Name == "database":
		case p.Name == "replication":
			if p.Value != "false" && p.Value != "off" && p.Value != "0" && p.Value != "no" {
				return nil, nil, wire.Fatalf(wire.CodeFeatureNotSupported, "sluice does not support replication connections")
			}
		case strings.HasPrefix(p.Name, "_pq_."):
			unknown = append(unknown, p.Name)
		case p.Name == "options":
			opts, err := wire.ParseOptions(p.Value)
			if err != nil {
				return nil, nil, wire.Fatalf(wire.CodeProtocolViolation, "invalid command-line argument for server process: %v", err)
			}
			out = append(out, opts...)
		default:
			out = append(out, p)
		}
	}
	return out, unknown, nil
}

// canonicalName returns the spelling the server uses for a parameter it
// reports (TimeZone for timezone), else the name in lower case, as
// PostgreSQL treats parameter names case-insensitively.
func canonicalName(srv *pool.Conn, name string) string {
	if _, ok := srv.Reported[name]; ok {
		return name
	}
	for r := range srv.Reported {
		if strings.EqualFold(r, name) {
			return r
		}
	}
	return strings.ToLower(name)
}

// fixed lists reported parameters that describe the server and cannot be
// set by a client.
var fixed = map[string]bool{
	"server_version": true, "server_encoding": true, "integer_datetimes": true,
	"is_superuser": true, "session_authorization": true, "in_hot_standby": true,
	"default_transaction_read_only": true, "scram_iterations": true,
}

// syncParams makes srv's parameters equal the client's: it sets those that
// differ and resets those a previous client set that this one did not, in
// one round trip, and nothing when they already match.
func (s *Session) syncParams(srv *pool.Conn) error {
	key := s.fingerprint()
	if srv.ParamsKey == key {
		return nil
	}
	var sets, resets []string
	for name, want := range s.params {
		if fixed[name] {
			continue
		}
		if have, ok := srv.Params[name]; !ok || have != want {
			sets = append(sets, fmt.Sprintf("pg_catalog.set_config(%s, %s, false)", wire.QuoteLiteral(name), wire.QuoteLiteral(want)))
		}
	}
	for name := range srv.Params {
		if _, reported := srv.Reported[name]; reported {
			continue
		}
		if _, ok := s.params[name]; !ok {
			resets = append(resets, name)
		}
	}
	if len(sets) == 0 && len(resets) == 0 {
		return nil
	}
	var q strings.Builder
	if len(sets) > 0 {
		q.WriteString("SELECT ")
		q.WriteString(strings.Join(sets, ", "))
		q.WriteString(";")
	}
	for _, name := range resets {
		q.WriteString("RESET ")
		q.WriteString(quoteIdent(name))
		q.WriteString(";")
	}
	if err := srv.Exec(q.String()); err != nil {
		return err
	}
	for name, want := range s.params {
		if _, reported := srv.Reported[name]; !reported && !fixed[name] {
			srv.Params[name] = want
		}
	}
	for _, name := range resets {
		delete(srv.Params, name)
	}
	srv.ParamsKey = key
	return nil
}

// fingerprint returns a string that is equal for two sessions exactly when
// their parameters are, computed once per change.
func (s *Session) fingerprint() string {
	if s.paramsKey != "" {
		return s.paramsKey
	}
	names := make([]string, 0, len(s.params))
	for name := range s.params {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		b.WriteString(name)
		b.WriteByte(0)
		b.WriteString(s.params[name])
		b.WriteByte(0)
	}
	b.WriteByte(1) // never empty
	s.paramsKey = b.String()
	return s.paramsKey
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
