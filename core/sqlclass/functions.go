package sqlclass

import "strings"

// funcKind is what the classifier knows of a function.
type funcKind uint8

const (
	fnUnknown           funcKind = iota // not known: it may write, so the statement is not read-only
	fnReads                             // a built-in function (or SQL syntax before a parenthesis) that only reads
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
	if len(name) > maxFuncNameLen || len(name) == 0 {
		return fnUnknown
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
	if readOnlyFunc(n) { // the common case first: no name in it writes
		return fnReads
	}
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
		"dblink_exec",
		// Bound to the session that called nextval, or to the writer.
		"currval", "lastval", "pg_current_wal_lsn", "pg_current_wal_insert_lsn",
		"pg_current_wal_flush_lsn", "pg_backup_start", "pg_backup_stop",
		"pg_start_backup", "pg_stop_backup", "gin_clean_pending_list",
		"pg_wal_replay_pause", "pg_wal_replay_resume":
		return fnWrites
	}
	switch n[0] {
	case 'b', 'l', 'p':
		for _, p := range [...]string{
			"pg_advisory_", "pg_try_advisory_", // transaction-level locks and unlocks
			"lo_", "pg_stat_reset", "pg_create_", "pg_drop_", "pg_replication_origin_",
			"pg_copy_", "pg_logical_slot_get_", "brin_",
		} {
			if strings.HasPrefix(n, p) {
				return fnWrites
			}
		}
	}
	if readOnlyPrefix(n) {
		return fnReads
	}
	return fnUnknown
}

// readOnlyFunc reports whether the lower-case name n before an opening
// parenthesis is a built-in function that only reads, a type name with a
// modifier (numeric(10, 2)), or a key word of SQL syntax (IN (...), OVER
// (...)). The list is of what applications commonly call; a name that is
// not on it (nor in readOnlyPrefix) makes its statement not read-only,
// which is safe: it is then sent where writes go. No name here is one of
// those lookupFunc finds to write.
func readOnlyFunc(n string) bool {
	switch n {
	// Syntax: key words that a parenthesis follows.
	case "all", "and", "any", "array", "as", "between", "by", "case", "cast",
		"coalesce", "collation", "cube", "distinct", "else", "except", "exists",
		"extract", "filter", "for", "from", "greatest", "group", "grouping",
		"having", "ilike", "in", "intersect", "is", "join", "lateral", "least",
		"like", "limit", "materialized", "normalize", "not", "nullif", "offset",
		"on", "only", "operator", "or", "over", "overlay", "position", "recursive",
		"repeatable", "rollup", "row", "select", "sets", "similar", "some",
		"substring", "tablesample", "bernoulli", "system", "then", "treat", "trim",
		"union", "using", "values", "when", "where", "within",
		"xmlattributes", "xmlconcat", "xmlelement", "xmlexists", "xmlforest",
		"xmlparse", "xmlpi", "xmlroot", "xmlserialize", "xmltable":
		return true
	// Types with a modifier.
	case "bit", "char", "character", "dec", "decimal", "float", "interval",
		"nchar", "numeric", "time", "timestamp", "timestamptz", "timetz",
		"varbit", "varchar", "varying":
		return true
	// Aggregates and window functions.
	case "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "corr",
		"count", "covar_pop", "covar_samp", "cume_dist", "dense_rank", "every",
		"first_value", "lag", "last_value", "lead", "max", "min", "mode",
		"nth_value", "ntile", "percent_rank", "percentile_cont",
		"percentile_disc", "rank", "row_number", "stddev", "stddev_pop",
		"stddev_samp", "sum", "var_pop", "var_samp", "variance", "xmlagg":
		return true
	// Scalar functions.
	case "abs", "acos", "age", "ascii", "asin", "atan", "atan2", "bit_length",
		"btrim", "cardinality", "cbrt", "ceil", "ceiling", "char_length",
		"character_length", "chr", "clock_timestamp", "concat", "concat_ws",
		"cos", "decode", "degrees", "div", "encode", "exp", "factorial",
		"floor", "format", "format_type", "gcd", "gen_random_uuid",
		"generate_series", "generate_subscripts", "initcap", "isfinite", "lcm",
		"left", "length", "ln", "log", "log10", "lower", "lpad", "ltrim", "md5",
		"mod", "now", "obj_description", "col_description", "octet_length",
		"pi", "pow", "power", "radians", "random", "repeat", "replace",
		"reverse", "right", "round", "rpad", "rtrim", "sha224", "sha256",
		"sha384", "sha512", "shobj_description", "sign", "sin", "split_part",
		"sqrt", "starts_with", "statement_timestamp", "strpos", "substr", "tan",
		"timeofday", "transaction_timestamp", "translate", "trunc", "unnest",
		"upper", "uuid_generate_v4", "version", "width_bucket", "pg_sleep",
		"pg_typeof", "pg_backend_pid", "pg_postmaster_start_time",
		"pg_conf_load_time", "pg_table_is_visible", "pg_type_is_visible",
		"pg_function_is_visible", "pg_encoding_to_char", "pg_sequence_last_value",
		"pg_current_snapshot", "txid_current_snapshot", "pg_snapshot_xmin",
		"pg_snapshot_xmax", "pg_xact_commit_timestamp":
		return true
	}
	return false
}

// readOnlyPrefix reports whether the lower-case name n is in one of the
// families of built-in functions that only read (those that write are
// looked for first).
func readOnlyPrefix(n string) bool {
	switch n[0] {
	case 'a', 'c', 'd', 'h', 'i', 'j', 'm', 'p', 'q', 'r', 's', 't':
	default:
		return false
	}
	for _, p := range [...]string{
		"array_", "current_", "date_", "has_", "inet_", "json_", "jsonb_",
		"justify_", "make_", "pg_get_", "pg_is_", "pg_last_", "pg_size_",
		"pg_relation_", "pg_table_", "pg_total_", "pg_indexes_", "pg_database_",
		"pg_column_", "quote_", "regexp_", "regr_", "string_", "to_",
	} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// call looks at a call of the function named by the token name, whose
// opening parenthesis the scanner has just read; before and qualifier are
// the two tokens before name (kind tokEOF at the start). A name after AS,
// WITH or RECURSIVE is a column list, not a call; a name after "schema."
// is only known when the schema is pg_catalog.
func (c *classifier) call(name, before, qualifier token) {
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
			c.unknownCall = true
			return
		}
		w = w[1 : len(w)-1]
	}
	switch k := lookupFunc(w); k {
	case fnUnknown, fnReads:
		if s.isPunct(before, '.') {
			// schema.f(): only pg_catalog's functions are known.
			if !isPgCatalog(s, qualifier) {
				c.unknownCall = true
			}
		} else if k == fnUnknown && !c.columnList(before) {
			c.unknownCall = true
		}
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

// columnList reports whether a name after the token before is a list of
// column names, not a call: AS t(a, b), WITH t(a) AS (...).
func (c *classifier) columnList(before token) bool {
	if before.kind == tokEOF {
		return c.first == kwWith
	}
	switch c.s.kw(before) {
	case kwAs, kwWith, kwRecursive:
		return true
	}
	return false
}

// isPgCatalog reports whether t names the schema pg_catalog.
func isPgCatalog(s *scanner, t token) bool {
	w := s.text(t)
	switch t.kind {
	case tokIdent:
		return len(w) == len("pg_catalog") && strings.EqualFold(w, "pg_catalog")
	case tokQIdent:
		return w == `"pg_catalog"`
	}
	return false
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
