package wire

import "encoding/binary"

// Message types Sluice inspects. Frontend (client to server) and backend
// (server to client) share letters with different meanings.
const (
	// Frontend.
	MsgQuery        = 'Q'
	MsgParse        = 'P'
	MsgBind         = 'B'
	MsgDescribe     = 'D'
	MsgExecute      = 'E'
	MsgClose        = 'C'
	MsgSync         = 'S'
	MsgFlush        = 'H'
	MsgFunctionCall = 'F'
	MsgCopyData     = 'd'
	MsgCopyDone     = 'c'
	MsgCopyFail     = 'f'
	MsgTerminate    = 'X'
	MsgPassword     = 'p'

	// Backend.
	MsgReadyForQuery        = 'Z'
	MsgParameterStatus      = 'S'
	MsgBackendKeyData       = 'K'
	MsgErrorResponse        = 'E'
	MsgNoticeResponse       = 'N'
	MsgAuthentication       = 'R'
	MsgCommandComplete      = 'C'
	MsgDataRow              = 'D'
	MsgRowDescription       = 'T'
	MsgNegotiateVersion     = 'v'
	MsgCopyInResponse       = 'G'
	MsgParseComplete        = '1'
	MsgBindComplete         = '2'
	MsgCloseComplete        = '3'
	MsgNoData               = 'n'
	MsgParameterDescription = 't'
	MsgCopyOutResponse      = 'H'
	MsgCopyBothResponse     = 'W'
)

// Transaction statuses carried by ReadyForQuery.
const (
	TxIdle   = 'I'
	TxActive = 'T'
	TxFailed = 'E'
)

// AppendMessage appends a message of type typ with body to dst.
func AppendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(body)))
	return append(dst, body...)
}

// AppendSync appends a Sync message to dst.
func AppendSync(dst []byte) []byte { return append(dst, MsgSync, 0, 0, 0, 4) }

// AppendReadyForQuery appends a ReadyForQuery message with status to dst.
func AppendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, MsgReadyForQuery, 0, 0, 0, 5, status)
}

// AppendParameterStatus appends a ParameterStatus message to dst.
func AppendParameterStatus(dst []byte, name, value string) []byte {
	dst = append(dst, MsgParameterStatus)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(name)+1+len(value)+1))
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// AppendBackendKeyData appends a BackendKeyData message to dst.
func AppendBackendKeyData(dst []byte, pid, secret uint32) []byte {
	dst = append(dst, MsgBackendKeyData, 0, 0, 0, 12)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return binary.BigEndian.AppendUint32(dst, secret)
}

// AppendAuthenticationOk appends an AuthenticationOk message to dst.
func AppendAuthenticationOk(dst []byte) []byte {
	return append(dst, MsgAuthentication, 0, 0, 0, 8, 0, 0, 0, 0)
}

// AppendQuery appends a simple Query message for sql to dst.
func AppendQuery(dst []byte, sql string) []byte {
	dst = append(dst, MsgQuery)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(sql)+1))
	dst = append(dst, sql...)
	return append(dst, 0)
}

// AppendTerminate appends a Terminate message to dst.
func AppendTerminate(dst []byte) []byte { return append(dst, MsgTerminate, 0, 0, 0, 4) }

// AppendNegotiateProtocolVersion appends a NegotiateProtocolVersion message
// naming the newest minor version Sluice supports and the protocol options
// it did not recognise.
func AppendNegotiateProtocolVersion(dst []byte, minor uint32, unrecognized []string) []byte {
	start := len(dst)
	dst = append(dst, MsgNegotiateVersion, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, minor)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(unrecognized)))
	for _, o := range unrecognized {
		dst = append(dst, o...)
		dst = append(dst, 0)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// ParseParameterStatus splits a ParameterStatus body into name and value.
func ParseParameterStatus(body []byte) (name, value string, ok bool) {
	name, rest, ok := cutNul(body)
	if !ok {
		return "", "", false
	}
	value, rest, ok = cutNul(rest)
	return name, value, ok && len(rest) == 0
}

// QuoteLiteral returns s as an escape-string literal (E'...') that reads the
// same whatever standard_conforming_strings is set to.
func QuoteLiteral(s string) string {
	b := make([]byte, 0, len(s)+3)
	b = append(b, 'E', '\'')
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			b = append(b, '\\', '\\')
		case '\'':
			b = append(b, '\'', '\'')
		default:
			b = append(b, s[i])
		}
	}
	return string(append(b, '\''))
}

// ParseDataRow decodes a DataRow body into text values (NULL as "").
func ParseDataRow(b []byte) ([]string, error) {
	if len(b) < 2 {
		return nil, ErrBadLength
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return nil, ErrBadLength
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l < 0 {
			out = append(out, "")
			continue
		}
		if l > len(b) {
			return nil, ErrBadLength
		}
		out = append(out, string(b[:l]))
		b = b[l:]
	}
	return out, nil
}
