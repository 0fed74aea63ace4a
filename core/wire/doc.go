// Package wire frames the PostgreSQL frontend/backend protocol (version 3.0)
// for Sluice: the startup packets that precede the message stream (startup,
// SSLRequest, GSSENCRequest, CancelRequest), buffered message reading and
// writing by the 5-byte header, and the ErrorResponse messages Sluice sends to
// clients with real SQLSTATE codes.
//
// The hot path forwards bytes: a message is read by its header and copied to
// the peer without being decoded. Only the few messages Sluice must inspect are
// decoded, with the message structs of github.com/jackc/pgproto3/v2.
//
// See https://www.postgresql.org/docs/15/protocol-message-formats.html.
package wire
