package sdk

// Configurer is a filter that checks its configuration. Configure runs once
// on every instance before any other hook; an error rejects the
// configuration and fails the filter's load with the error's text.
type Configurer interface {
	Configure(cfg Config) error
}

// SessionStarter is a filter told when a client session starts. Its
// answer is Default() to accept the session, Reject(sqlstate, message) to
// refuse it (the client gets a FATAL error with that SQLSTATE), or
// Cluster(name) to serve the whole session from the named cluster (every
// statement's default route then goes there). Any other decision is a
// failure of the filter.
type SessionStarter interface {
	SessionStart(s Session) Decision
}

// StatementHandler is a filter that decides statements. Statement is the
// hot path: it should not allocate. st and its strings are valid only until
// it returns.
type StatementHandler interface {
	Statement(s Session, st *Statement) Decision
}

// SessionEnder is a filter told when a client session ends. The session's
// key/value store is dropped after it returns.
type SessionEnder interface {
	SessionEnd(s Session)
}

// registered is the filter Register was given.
var registered struct {
	configure Configurer
	start     SessionStarter
	statement StatementHandler
	end       SessionEnder
}

// Register makes f the module's filter; call it once, from an init
// function. f may implement any of Configurer, SessionStarter,
// StatementHandler and SessionEnder; a hook it lacks does nothing.
func Register(f any) {
	registered.configure, _ = f.(Configurer)
	registered.start, _ = f.(SessionStarter)
	registered.statement, _ = f.(StatementHandler)
	registered.end, _ = f.(SessionEnder)
}
