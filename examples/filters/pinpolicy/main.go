// Command pinpolicy is a Sluice filter that overrides Sluice's pin
// decisions where the operator knows better than the classifier: it pins a
// session that calls one of the configured functions (which keep session
// state Sluice cannot see), and it does not pin for set_config(...,
// false), SET or RESET of the configured parameters that PostgreSQL
// reports to clients, whose new values Sluice learns and carries to the
// next server connection.
package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sluicedb/sluice/sdk"
	"github.com/sluicedb/sluice/sdk/sqllex"
)

// pinPolicy is the filter. Its only state is its configuration, the same
// on every instance.
type pinPolicy struct{}

// The configuration, set once by Configure on every instance.
var (
	neverPin   map[string]bool   // parameters, in lower case
	pinFuncs   map[string]string // function name -> pin reason
	maxFuncLen int               // the longest name in pinFuncs
)

// config is the filter's JSON configuration.
type config struct {
	// NeverPinSet lists the parameters whose set_config(..., false), SET
	// and RESET do not pin.
	NeverPinSet []string `json:"never_pin_set"`
	// PinOnFunctions lists the functions whose calls pin the session.
	PinOnFunctions []string `json:"pin_on_functions"`
	// Reason is the text before the function's name in the pin reason.
	Reason *string `json:"reason"`
}

// reported are the parameters PostgreSQL reports to the client
// (ParameterStatus) when they change, that a client may set and that
// Sluice replays as it reads them: Sluice follows a change of one of them
// whatever statement made it. Of the other reported parameters,
// client_encoding and standard_conforming_strings change how Sluice must
// read the session's traffic, default_transaction_read_only is Sluice's own
// on a reader fallback, and the rest are read-only.
var reported = []string{"application_name", "datestyle", "intervalstyle", "timezone"}

// pinnedAnyway are the functions whose calls Sluice's classifier already
// pins (and unpins, for advisory locks, at pg_advisory_unlock_all()).
var pinnedAnyway = []string{
	"set_config", "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
}

// Configure implements sdk.Configurer.
func (pinPolicy) Configure(c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if len(cfg.NeverPinSet) == 0 && len(cfg.PinOnFunctions) == 0 {
		return errors.New("nothing to do: give never_pin_set or pin_on_functions")
	}
	reason := "call of"
	if cfg.Reason != nil {
		reason = strings.TrimSpace(*cfg.Reason)
		if reason == "" || len(reason) > 64 {
			return errors.New("reason: must be 1 to 64 bytes")
		}
	}
	never := make(map[string]bool)
	for _, name := range cfg.NeverPinSet {
		lower := strings.ToLower(name)
		if !contains(reported, lower) {
			return fmt.Errorf("never_pin_set: %q cannot go unpinned: PostgreSQL does not report it to clients "+
				"(or Sluice must see it), so Sluice could not carry a value it does not track to the next "+
				"server connection; allowed: %s", name, strings.Join(reported, ", "))
		}
		never[lower] = true
	}
	funcs := make(map[string]string)
	longest := 0
	for _, name := range cfg.PinOnFunctions {
		switch {
		case !isLowerIdent(name):
			return fmt.Errorf("pin_on_functions: %q: not a function name in lower case (letters, digits, _ and $, "+
				"at most 63 bytes, without its schema)", name)
		case contains(pinnedAnyway, name):
			return fmt.Errorf("pin_on_functions: %q: Sluice pins on it already; leave it out", name)
		}
		funcs[name] = reason + " " + name + "()"
		longest = max(longest, len(name))
	}
	neverPin, pinFuncs, maxFuncLen = never, funcs, longest
	return nil
}

// Statement implements sdk.StatementHandler. It does not allocate.
func (pinPolicy) Statement(_ sdk.Session, st *sdk.Statement) sdk.Decision {
	if len(pinFuncs) > 0 && mayCall(st.SQL) {
		if reason, ok := calls(st.SQL); ok {
			sdk.Count("forced_pins", 1)
			return sdk.Default().ForcePin(reason)
		}
	}
	if len(neverPin) > 0 && unpinnable(st) {
		sdk.Count("never_pins", 1)
		return sdk.Default().NeverPin()
	}
	return sdk.Default()
}

// unpinnable reports whether the statement sets only parameters of
// neverPin and pins for no other reason. It leaves alone what Sluice
// handles without pinning anyway, statements of the extended protocol
// (Sluice applies a prepared statement's effects again at each Bind,
// without asking filters) and text the filter does not see whole.
func unpinnable(st *sdk.Statement) bool {
	if st.Count != 1 || st.Extended || st.Truncated {
		return false
	}
	switch {
	case st.Command == "SELECT" && st.DefaultPin && st.PinReasonCode == reasonSetConfig && st.Effects == sdk.EffectPin:
		return onlySetsListed(st.SQL)
	case st.Command == "SET" && (st.Effects == sdk.EffectSet || st.Effects == sdk.EffectReset),
		st.Command == "RESET" && st.Effects == sdk.EffectReset:
		// Sluice pins these only when it does not track the parameter
		// (pinning.track, pinning.on_set = "pin"); the filter cannot see
		// that, and not pinning is right either way.
		return setsListed(st.SQL)
	}
	return false
}

// reasonSetConfig is the ABI's pin reason code of set_config(..., false).
const reasonSetConfig = 3

// mayCall reports whether the text may call a function of pinFuncs: a
// quick look at each opening parenthesis and what stands before it, so
// that a long statement with no such call (a bulk INSERT) is not read
// sqllex.Token by sqllex.Token. It may answer true for text that calls none (a name in a
// string); calls decides.
func mayCall(sql string) bool {
	for i := 0; ; i++ {
		j := strings.IndexByte(sql[i:], '(')
		if j < 0 {
			return false
		}
		i += j
		k := i
		for k > 0 && (sql[k-1] == ' ' || sql[k-1] == '\t' || sql[k-1] == '\r' || sql[k-1] == '\f' || sql[k-1] == '\v') {
			k--
		}
		if k == 0 {
			continue
		}
		switch c := sql[k-1]; {
		case c == '\n', c == '/', c == '"':
			return true // after a comment (--, /* */) or a quoted name: let calls read it
		case sqllex.IsIdentChar(c):
			w := k - 1
			for w > 0 && k-w <= maxFuncLen && sqllex.IsIdentChar(sql[w-1]) {
				w--
			}
			word := sql[w:k]
			if sqllex.IsDigit(word[0]) || strings.IndexByte(word, '$') >= 0 {
				return true // where the tokenizer's word starts is not plain: let calls read it
			}
			var buf [64]byte
			if _, ok := pinFuncs[string(fold(buf[:0], word))]; ok {
				return true
			}
		}
	}
}

// calls returns the pin reason of the first function of pinFuncs that the
// text calls: its name, or its name quoted, followed by an opening
// parenthesis, outside strings and comments, whatever its schema.
func calls(sql string) (string, bool) {
	l := sqllex.Lexer{Src: sql}
	var prev sqllex.Token
	var buf [64]byte
	for t := l.Next(); t.Kind != sqllex.EOF; prev, t = t, l.Next() {
		if !l.IsPunct(t, '(') {
			continue
		}
		if reason, ok := pinFuncs[string(name(buf[:0], l.Src, prev))]; ok {
			return reason, true
		}
	}
	return "", false
}

// onlySetsListed reports whether every function the text calls is
// set_config (or pg_catalog.set_config) with a string constant naming a
// parameter of neverPin as its first argument, and it has no INTO (SELECT
// ... INTO TEMP pins). Any other call, or anything before a parenthesis
// that may be one, makes it false.
func onlySetsListed(sql string) bool {
	l := sqllex.Lexer{Src: sql}
	var prev, prev2, prev3 sqllex.Token
	var buf [64]byte
	calls := 0
	for t := l.Next(); t.Kind != sqllex.EOF; prev3, prev2, prev, t = prev2, prev, t, l.Next() {
		if l.Is(t, "into") {
			return false
		}
		if !l.IsPunct(t, '(') || !sqllex.IsName(prev) {
			continue
		}
		if string(name(buf[:0], l.Src, prev)) != "set_config" ||
			l.IsPunct(prev2, '.') && string(name(buf[:0], l.Src, prev3)) != "pg_catalog" {
			return false
		}
		la := l
		if !neverPin[string(constant(buf[:0], la.Src, la.Next()))] || !la.IsPunct(la.Next(), ',') {
			return false
		}
		calls++
	}
	return calls > 0
}

// setsListed reports whether the text is SET [SESSION] name {TO | =} ...,
// SET TIME ZONE ... or RESET name, of a parameter of neverPin.
func setsListed(sql string) bool {
	l := sqllex.Lexer{Src: sql}
	var buf [64]byte
	verb := l.Next()
	t := l.Next()
	switch {
	case l.Is(verb, "reset"):
		end := l.Next()
		return neverPin[string(name(buf[:0], l.Src, t))] && (end.Kind == sqllex.EOF || l.IsPunct(end, ';'))
	case !l.Is(verb, "set"):
		return false
	}
	if l.Is(t, "session") {
		t = l.Next()
	}
	if l.Is(t, "time") {
		return l.Is(l.Next(), "zone") && neverPin["timezone"]
	}
	op := l.Next()
	return neverPin[string(name(buf[:0], l.Src, t))] && (l.IsPunct(op, '=') || l.Is(op, "to"))
}

// name appends to buf the name that a word or a quoted identifier
// (without Unicode escapes) spells, in lower case for a word, and returns
// it; it returns buf unchanged for any other token. Callers look it up as
// string(b), which does not allocate.
func name(buf []byte, src string, t sqllex.Token) []byte {
	w := src[t.Start:t.End]
	switch {
	case t.Kind == sqllex.Quoted && len(w) >= 2 && w[0] == '"' && w[len(w)-1] == '"':
		return append(buf, w[1:len(w)-1]...) // a doubled "" inside matches no name
	case t.Kind == sqllex.Word:
		return fold(buf, w)
	}
	return buf
}

// constant appends to buf the text of a plain string constant ('...') in
// lower case, and returns it; it returns buf unchanged for any other token.
func constant(buf []byte, src string, t sqllex.Token) []byte {
	w := src[t.Start:t.End]
	if t.Kind != sqllex.String || len(w) < 2 || w[0] != '\'' || w[len(w)-1] != '\'' {
		return buf
	}
	return fold(buf, w[1:len(w)-1])
}

// fold appends w to buf with ASCII letters in lower case, or nothing when
// w is longer than any name the filter looks for (64 bytes): buf's
// capacity then suffices and nothing is allocated.
func fold(buf []byte, w string) []byte {
	if len(w) > 64 {
		return buf
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf
}

// isLowerIdent reports whether s is a valid unquoted name in lower case.
func isLowerIdent(s string) bool {
	if s == "" || len(s) > 63 || !(s[0] == '_' || 'a' <= s[0] && s[0] <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c == '_' || c == '$' || 'a' <= c && c <= 'z' || sqllex.IsDigit(c)) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func init() { sdk.Register(pinPolicy{}) }

func main() {}
