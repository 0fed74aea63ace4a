package pool

import "time"

// Observer is told what happens in one pool, for metrics. The pool calls
// it without holding its lock; its methods run on the hot path, so they
// must be cheap, must not block, and must be safe for concurrent use.
type Observer interface {
	// Opened reports a new server connection, dialled and authenticated.
	Opened()
	// DialFailed reports a connection that could not be opened.
	DialFailed()
	// Closed reports a connection the pool closed, and why.
	Closed(CloseReason)
	// Waited reports how long a Borrow of an open pool took, whatever its
	// outcome: taking an idle connection, dialling one, or waiting in line.
	Waited(time.Duration)
	// TimedOut reports a Borrow that gave up after the borrow timeout.
	TimedOut()
	// Served is not called by the pool: the borrower of a connection
	// reports each client request the server answered on it with a
	// ReadyForQuery, how long the server took (negative when unknown), and
	// whether that ReadyForQuery left the connection outside a transaction
	// block (status 'I').
	Served(took time.Duration, txEnd bool)
}

// WithObserver makes o the pool's Observer.
func WithObserver(o Observer) Option {
	return func(p *Pool) { p.obs = o }
}

// Option configures a Pool at New.
type Option func(*Pool)

// Observer returns the pool's Observer: the one given WithObserver, or one
// that does nothing.
func (p *Pool) Observer() Observer { return p.obs }

// nopObserver is the Observer of a pool given none.
type nopObserver struct{}

func (nopObserver) Opened()                    {}
func (nopObserver) DialFailed()                {}
func (nopObserver) Closed(CloseReason)         {}
func (nopObserver) Waited(time.Duration)       {}
func (nopObserver) TimedOut()                  {}
func (nopObserver) Served(time.Duration, bool) {}

var _ Observer = nopObserver{}

// CloseReason says why a pool closed a server connection.
type CloseReason uint8

// The reasons a pool closes a connection.
const (
	// CloseBroken: its borrower found it unusable (Discard or MarkBroken:
	// a failed read or write, a FATAL, a cancel sent on it).
	CloseBroken CloseReason = iota
	// CloseServerGone: found dead while idle (the server sent a FATAL or
	// closed it, as at a restart or pg_terminate_backend).
	CloseServerGone
	// CloseIdleTimeout: idle longer than server_idle_timeout.
	CloseIdleTimeout
	// CloseLifetime: older than server_lifetime.
	CloseLifetime
	// CloseSurplus: more than max_idle_connections idle, or more than
	// max_connections open after a reload lowered it.
	CloseSurplus
	// CloseRetired: the pool was closed (its endpoint left the topology,
	// or the proxy stopped).
	CloseRetired

	closeReasons // how many reasons there are
)

var closeReasonNames = [closeReasons]string{"broken", "server_gone", "idle_timeout", "lifetime", "surplus", "retired"}

// String returns the reason as metrics label it: "broken", "server_gone",
// "idle_timeout", "lifetime", "surplus" or "retired".
func (r CloseReason) String() string {
	if r < closeReasons {
		return closeReasonNames[r]
	}
	return "unknown"
}

// CloseReasons returns every CloseReason, in order.
func CloseReasons() []CloseReason {
	out := make([]CloseReason, closeReasons)
	for i := range out {
		out[i] = CloseReason(i)
	}
	return out
}
