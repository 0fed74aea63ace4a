package wire

import (
	"errors"
	"fmt"

	"github.com/jackc/pgproto3/v2"
)

// SQLSTATE codes Sluice sends to clients.
// See https://www.postgresql.org/docs/15/errcodes-appendix.html.
const (
	CodeProtocolViolation     = "08P01"
	CodeConnectionFailure     = "08006"
	CodeResolutionUnknown     = "08007" // transaction_resolution_unknown
	CodeSerializationFailure  = "40001"
	CodeInFailedTransaction   = "25P02"
	CodeConnectionException   = "08000"
	CodeUnableToConnect       = "08001" // sqlclient_unable_to_establish_sqlconnection
	CodeInvalidAuthorization  = "28000"
	CodeInvalidPassword       = "28P01"
	CodeTooManyConnections    = "53300"
	CodeAdminShutdown         = "57P01"
	CodeIdleSessionTimeout    = "57P05"
	CodeFeatureNotSupported   = "0A000"
	CodeInvalidParameterValue = "22023"
	CodeQueryCanceled         = "57014"
	CodeInternalError         = "XX000"
	CodeCannotConnectNow      = "57P03"
	CodeConfigLimitExceeded   = "53400"
	CodeIdleInTransaction     = "25P03"
	// CodeInvalidTextRepresentation is invalid_text_representation, as
	// for a malformed value of a type.
	CodeInvalidTextRepresentation = "22P02"
	CodeSyntaxError               = "42601"
	// CodeCantChangeRuntimeParam refuses a SET of a read-only parameter.
	CodeCantChangeRuntimeParam = "55P02"
)

// Severities of an ErrorResponse.
const (
	SeverityError = "ERROR"
	SeverityFatal = "FATAL"
)

// Error is an error Sluice reports to a client as an ErrorResponse. Its
// Message is safe to show to the client: it never carries addresses or
// credentials. Internal detail belongs in the wrapped Err, which is logged.
type Error struct {
	Severity string
	Code     string
	Message  string
	Detail   string
	Hint     string
	Err      error
}

// Errorf returns an ERROR-severity *Error with the given SQLSTATE.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Severity: SeverityError, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Fatalf returns a FATAL-severity *Error with the given SQLSTATE.
func Fatalf(code, format string, args ...any) *Error {
	return &Error{Severity: SeverityFatal, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns e with cause recorded for logs; the client never sees cause.
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.Err = cause
	return &c
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s %s: %s: %v", e.Severity, e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s %s: %s", e.Severity, e.Code, e.Message)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// Fatal reports whether the client's connection ends after this error.
func (e *Error) Fatal() bool { return e.Severity == SeverityFatal || e.Severity == "PANIC" }

// Encode appends the ErrorResponse message for e to dst.
func (e *Error) Encode(dst []byte) []byte {
	msg := pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
	}
	out, err := msg.Encode(dst)
	if err != nil {
		// Encoding fails only for fields that overflow an int32 length.
		return dst
	}
	return out
}

// AsError returns err as an *Error for a client: err itself when it is one
// (or wraps one), else a generic internal error that reveals nothing.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return (&Error{Severity: SeverityFatal, Code: CodeInternalError, Message: "internal error in sluice"}).Wrap(err)
}
