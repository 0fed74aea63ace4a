package session

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/pool"
	"github.com/sluicedb/sluice/core/sqlclass"
	"github.com/sluicedb/sluice/core/wire"
)

// pinSet is a set of reasons a session keeps its server connection: bit r
// stands for sqlclass.Reason r; the bits above hold Sluice's own reasons.
type pinSet uint32

// Sluice's own pin reasons, beyond the classifier's.
const (
	pinUntrackedSet pinSet = 1 << (20 + iota)
	pinSessionMode
)

// ReasonUntrackedSet is the text of the pin reason for a session-level SET
// or RESET of a parameter Sluice does not track (or of any parameter when
// pinning.on_set is "pin").
const ReasonUntrackedSet = "SET of an untracked parameter"

func reasonBit(r sqlclass.Reason) pinSet { return 1 << uint(r) }

// texts returns the reasons in p as sorted texts.
func (p pinSet) texts() []string {
	var out []string
	for p != 0 {
		b := pinSet(1) << uint(bits.TrailingZeros32(uint32(p)))
		p &^= b
		out = append(out, b.text())
	}
	sort.Strings(out)
	return out
}

func (b pinSet) text() string {
	switch b {
	case pinUntrackedSet:
		return ReasonUntrackedSet
	case pinSessionMode:
		return "session pooling mode"
	}
	return sqlclass.Reason(bits.TrailingZeros32(uint32(b))).String()
}

// pinLocked adds reasons to the session's pins, logging and counting each
// reason once per session.
func (s *Session) pinLocked(add pinSet) {
	fresh := add &^ s.pinLogged
	s.pins |= add
	s.pinLogged |= add
	for fresh != 0 {
		b := pinSet(1) << uint(bits.TrailingZeros32(uint32(fresh)))
		fresh &^= b
		s.log.Info("session pinned", zap.String("reason", b.text()))
		if s.env.CountPin != nil {
			s.env.CountPin(b.text())
		}
	}
}

// classifyQuery applies the session-state effects of a simple Query's text.
func (s *Session) classifyQuery(sql string) {
	s.stmts = sqlclass.Classify(s.stmts[:0], sql)
	for i := range s.stmts {
		if s.stmts[i].Effects != nil {
			s.applyEffects(s.stmts[i].Effects)
		}
	}
}

// applyEffects records what a statement does to session state: pins and
// unpins, and tracked parameters whose values must be read back once the
// statement has run. It runs in the client loop before the statement is
// forwarded, so a pin takes effect before the server can act on it.
func (s *Session) applyEffects(effects []sqlclass.Effect) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyEffectsLocked(effects)
}

func (s *Session) applyEffectsLocked(effects []sqlclass.Effect) {
	for _, e := range effects {
		switch e.Kind {
		case sqlclass.SetParam, sqlclass.ResetParam:
			if s.env.OnSetPin || !s.env.Track[e.Name] {
				s.pinLocked(pinUntrackedSet)
				continue
			}
			if s.dirty == nil {
				s.dirty = make(map[string]bool)
			}
			s.dirty[strings.Clone(e.Name)] = true
			s.refresh = true
		case sqlclass.ResetAll:
			s.resetAll = true
			s.refresh = true
		case sqlclass.DiscardAll:
			s.resetAll = true
			s.refresh = true
			s.pins &= pinSessionMode
			s.forgetPreparedLocked()
		case sqlclass.Pin:
			s.pinLocked(reasonBit(e.Reason))
		case sqlclass.Unpin:
			s.pins &^= reasonBit(e.Reason)
			if e.Reason == sqlclass.ReasonPrepare {
				s.forgetPreparedLocked() // DEALLOCATE ALL
			}
		}
	}
}

// refreshParams brings the client's tracked parameters up to date from
// srv after statements that set or reset them: it reads back the values
// the server now has (which also honours ROLLBACK and savepoints), or after
// RESET ALL and DISCARD ALL restores the client's startup values. The
// client loop calls it while it alone uses srv, with nothing in flight.
func (s *Session) refreshParams(srv *pool.Conn) error {
	s.mu.Lock()
	dirty, resetAll := s.dirty, s.resetAll
	s.dirty, s.resetAll, s.refresh = nil, false, false
	s.mu.Unlock()
	if resetAll {
		// RESET ALL and DISCARD ALL return the server connection to its own
		// defaults; the client expects those of its startup packet.
		s.params = make(map[string]string, len(s.startParams))
		for k, v := range s.startParams {
			s.params[k] = v
		}
		s.paramsKey = ""
		srv.ForgetSetParams()
		srv.ParamsKey = ""
		for name := range s.params {
			delete(dirty, strings.ToLower(name))
		}
	}
	if len(dirty) > 0 {
		names := make([]string, 0, len(dirty))
		for name := range dirty {
			names = append(names, name)
		}
		sort.Strings(names)
		var q strings.Builder
		q.WriteString("SELECT ")
		for i, name := range names {
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "pg_catalog.current_setting(%s)", wire.QuoteLiteral(name))
		}
		values, err := srv.QueryRow(q.String())
		if err != nil {
			return err
		}
		for i, name := range names {
			name = canonicalName(srv, name)
			s.params[name] = values[i]
			srv.Params[name] = values[i]
		}
		s.paramsKey = ""
	}
	if resetAll {
		return s.syncParams(srv)
	}
	srv.ParamsKey = s.fingerprint()
	return nil
}

// Info describes the session for the admin API and tests.
type Info struct {
	User, Database string
	Pinned         []string
	Holds          bool
}

// Info returns a snapshot of the session. Safe for concurrent use.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Info{User: s.user, Database: s.database, Pinned: s.pins.texts(), Holds: s.server != nil}
}
