package sqlclass

import "strings"

// funcKind is what the classifier knows of a function.
type funcKind uint8

const (
	fnOther             funcKind = iota // unknown: assumed to read only
	fnWrites                            // changes state, with no session effect to report
	fnAdvisoryLock                      // takes a session-level advisory lock
	fnAdvisoryUnlockAll                 // pg_advisory_unlock_all
	fnSetConfig                         // set_config(name, value, is_local)
)

// maxFuncNameLen bounds the names lookupFunc compares.
const maxFuncNameLen = 48

// lookupFunc returns what the classifier knows of the function called
// name (already lower case, or in any case when it was unquoted).
//
// https://www.postgresql.org/docs/15/functions-admin.html
func lookupFunc(name string) funcKind {
	if len(name) < 6 || len(name) > maxFuncNameLen {
		return fnOther
	}
	switch name[0] | 0x20 { // every name below starts with one of these
	case 'd', 'l', 'n', 'p', 's', 't':
	default:
		return fnOther
	}
	var buf [maxFuncNameLen]byte
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	n := string(buf[:len(name)])
	switch n {
	case "pg_advisory_lock", "pg_advisory_lock_shared",
		"pg_try_advisory_lock", "pg_try_advisory_lock_shared":
		return fnAdvisoryLock
	case "pg_advisory_unlock_all":
		return fnAdvisoryUnlockAll
	case "set_config":
		return fnSetConfig
	case "nextval", "setval", "setseed", "pg_notify",
		"txid_current", "pg_current_xact_id", "lowrite",
		"pg_logical_emit_message", "pg_switch_wal", "pg_create_restore_point",
		"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
		"pg_rotate_logfile", "pg_promote", "pg_import_system_collations",
		"pg_replication_slot_advance", "pg_log_backend_memory_contexts",
		"dblink_exec":
		return fnWrites
	}
	for _, p := range [...]string{
		"pg_advisory_", "pg_try_advisory_", // transaction-level locks and unlocks
		"lo_", "pg_stat_reset", "pg_create_", "pg_drop_", "pg_replication_origin_",
	} {
		if strings.HasPrefix(n, p) {
			return fnWrites
		}
	}
	return fnOther
}

// call looks at a call of the function named by the token name, whose
// opening parenthesis the scanner has just read.
func (c *classifier) call(name token) {
	s := &c.s
	w := s.text(name)
	if name.kind == tokQIdent {
		if isUnicodeIdent(s, name) {
			// U&"\0073et_config" may spell any name.
			c.writes = true
			c.pin(ReasonUnknown)
			return
		}
		// A quoted name matches only when written in lower case, without
		// escapes.
		if len(w) < 2 || hasUpper(w) || strings.Contains(w[1:len(w)-1], `"`) {
			return
		}
		w = w[1 : len(w)-1]
	}
	switch lookupFunc(w) {
	case fnWrites:
		c.writes = true
	case fnAdvisoryLock:
		c.writes = true
		c.pin(ReasonAdvisoryLock)
	case fnAdvisoryUnlockAll:
		c.writes = true
		c.unpin(ReasonAdvisoryLock)
	case fnSetConfig:
		c.writes = true
		if !c.setConfigIsLocal() {
			c.pin(ReasonSetConfig)
		}
	}
}

// maxLookahead bounds the tokens setConfigIsLocal reads ahead, so that
// nested calls cannot make the classifier's time quadratic.
const maxLookahead = 256

// setConfigIsLocal reports whether the arguments of set_config, whose
// opening parenthesis the scanner has just read, end with the literal true:
// set_config(name, value, true) lasts only until the end of the
// transaction. It consumes nothing. Arguments longer than maxLookahead
// tokens count as not local.
func (c *classifier) setConfigIsLocal() bool {
	s := &c.s
	save := *s
	defer func() { *s = save }()
	base := s.depth
	commas, third := 0, 0
	var last token
	for n := 0; ; n++ {
		t := s.next()
		switch {
		case t.kind == tokEOF || n == maxLookahead:
			return false
		case s.isPunct(t, ')') && s.depth < base:
			return commas == 2 && third == 1 && s.kw(last) == kwTrue
		case s.isPunct(t, ',') && s.depth == base:
			commas++
		case commas == 2:
			third++
			last = t
		}
	}
}
