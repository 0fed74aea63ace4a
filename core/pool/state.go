package pool

// ServerState is what Sluice knows of the session on one server
// connection: its key, its parameters and the prepared statements Sluice
// made there. It is plain data with no I/O, so that the session machine can
// keep it up to date (and its tests can build one) without a socket. Its
// owner, the borrower of the connection, serialises access.
type ServerState struct {
	// ProcessID and SecretKey are the server's BackendKeyData, used to
	// forward a client's CancelRequest.
	ProcessID, SecretKey uint32

	// Params holds the server's current value of every parameter it reports
	// (from ParameterStatus) and of every parameter Sluice set on it.
	Params map[string]string
	// Reported holds the values the server reported when the connection
	// started: the defaults a client that sets nothing would see.
	Reported map[string]string
	// Prepared holds the protocol-level prepared statements Sluice made on
	// this connection for its clients.
	Prepared Prepared
	// PendingClose lists statements to close at the start of the next batch.
	PendingClose []string
	// UnnamedKey identifies the query and types of the unnamed statement
	// last parsed on this connection, or "" when unknown or none.
	UnnamedKey string
	// ParamsKey fingerprints Params as last synchronised by a session, so
	// that a borrower with the same parameters skips the comparison. It is
	// cleared whenever Params changes otherwise.
	ParamsKey string
}

// ForgetSetParams drops the parameters Sluice set that the server does not
// report, after DISCARD ALL or RESET ALL restored their defaults.
func (s *ServerState) ForgetSetParams() {
	s.ParamsKey = ""
	for name := range s.Params {
		if _, ok := s.Reported[name]; !ok {
			delete(s.Params, name)
		}
	}
}

// NoteParameterStatus records a ParameterStatus body the server sent.
func (s *ServerState) NoteParameterStatus(name, value string) {
	s.Params[name] = value
	s.ParamsKey = ""
}
