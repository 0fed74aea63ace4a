package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The targets for the engines (issue 9). They are called goals
// here, "target" being what pgbench connects to.
const (
	// cpuGoalRatio and cpuGoalRatio1000 bound a Sluice engine's CPU time
	// per transaction over PgBouncer's: at 10 and 100 clients, and at
	// 1,000.
	cpuGoalRatio     = 1.15
	cpuGoalRatio1000 = 1.25
	// tpsGoalRatio is the least TPS over PgBouncer's at 10, 100 and
	// 1,000 clients.
	tpsGoalRatio = 1.0
	// latencyGoalMicros is the most average latency added over a direct
	// connection at one client.
	latencyGoalMicros = 40
	// idleGoalKiB is the most resident memory per idle plaintext client,
	// at idleGoalClients idle clients.
	idleGoalKiB     = 4
	idleGoalClients = 10000
	// idleTLSGoalKiB is the most resident memory per idle TLS client, at
	// idleGoalClients idle clients, evaluated on targetSluiceTLS.
	idleTLSGoalKiB = 24
	// preparedGoalRatio is the least -M prepared TPS over direct's at
	// preparedGoalClients.
	preparedGoalRatio = 0.8
)

var (
	// tpsGoalClients are the client counts the CPU and TPS goals are set
	// at.
	tpsGoalClients = []int{10, 100, 1000}
	// preparedGoalClients are those of the -M prepared goal.
	preparedGoalClients = []int{10, 100}
	// engineTargets are the Sluice targets the goals are evaluated for:
	// the loop engine first, the goroutine engine beside it.
	engineTargets = []string{targetSluice, targetSluiceGoroutine}
)

// goalCheck is one goal in one place (mode, client count), evaluated for
// each engine target.
type goalCheck struct {
	goal  string // what is compared with what, and the limit
	where string // the mode and client count
	// values holds each engine's figure; an engine missing from it has
	// no target the goal applies to (the goroutine engine and TLS).
	values map[string]goalValue
}

// cell renders engine's figure for the targets table: "-" if the goal
// does not apply to it.
func (c goalCheck) cell(engine string) string {
	v, ok := c.values[engine]
	if !ok {
		return "-"
	}
	return v.cell()
}

// goalValue is one engine's figure for a goalCheck.
type goalValue struct {
	measured bool
	text     string // the figure, as shown
	met      bool
	remark   string // said after the verdict, e.g. a different client count
}

// cell renders v for the targets table.
func (v goalValue) cell() string {
	if !v.measured {
		return "not measured"
	}
	s := v.text + " met"
	if !v.met {
		s = v.text + " **NOT met**"
	}
	if v.remark != "" {
		s += " (" + v.remark + ")"
	}
	return s
}

// engines returns the engine targets that ran.
func (b *bench) engines() []string {
	var out []string
	for _, t := range engineTargets {
		if slices.Contains(b.opts.targets, t) {
			out = append(out, t)
		}
	}
	return out
}

// evaluateGoals evaluates every goal for every engine target that ran,
// from the measured results; a goal whose figures are missing (not run,
// failed) is "not measured".
func (b *bench) evaluateGoals() []goalCheck {
	o := b.opts
	engines := b.engines()
	res := func(mode string, clients int, target string) (runResult, bool) {
		if !slices.Contains(o.modes, mode) || !slices.Contains(o.clients, clients) {
			return runResult{}, false
		}
		r, ok := b.results[resultKey{mode: mode, clients: clients, target: target}]
		return r, ok && succeeded(r)
	}
	check := func(goal, where string, eval func(engine string) goalValue) goalCheck {
		c := goalCheck{goal: goal, where: where, values: map[string]goalValue{}}
		for _, e := range engines {
			c.values[e] = eval(e)
		}
		return c
	}
	var checks []goalCheck
	var pgbModes []string
	for _, m := range o.modes {
		if _, no := pgbouncerUnsupported[m]; !no {
			pgbModes = append(pgbModes, m)
		}
	}

	// CPU per transaction over PgBouncer's.
	for _, mode := range pgbModes {
		for _, clients := range tpsGoalClients {
			limit := cpuGoalRatio
			if clients >= 1000 {
				limit = cpuGoalRatio1000
			}
			checks = append(checks, check(fmt.Sprintf("CPU/tx ≤ %.2fx PgBouncer's", limit), where(mode, clients), func(e string) goalValue {
				s, okS := res(mode, clients, e)
				p, okP := res(mode, clients, targetPgBouncer)
				perS, okPS := cpuPerTx(s, o.duration)
				perP, okPP := cpuPerTx(p, o.duration)
				if !okS || !okP || !okPS || !okPP || perP <= 0 {
					return goalValue{}
				}
				ratio := perS / perP
				return goalValue{measured: true, text: fmt.Sprintf("%.2fx", ratio), met: ratio <= limit}
			}))
		}
	}
	// TPS over PgBouncer's.
	for _, mode := range pgbModes {
		for _, clients := range tpsGoalClients {
			checks = append(checks, check(fmt.Sprintf("TPS ≥ %.1fx PgBouncer's", tpsGoalRatio), where(mode, clients), func(e string) goalValue {
				s, okS := res(mode, clients, e)
				p, okP := res(mode, clients, targetPgBouncer)
				if !okS || !okP || p.bench.tps <= 0 {
					return goalValue{}
				}
				ratio := s.bench.tps / p.bench.tps
				return goalValue{measured: true, text: fmt.Sprintf("%.2fx", ratio), met: ratio >= tpsGoalRatio}
			}))
		}
	}
	// Added latency at one client.
	for _, mode := range o.modes {
		checks = append(checks, check(fmt.Sprintf("added latency ≤ %d µs over direct", latencyGoalMicros), where(mode, 1), func(e string) goalValue {
			s, okS := res(mode, 1, e)
			d, okD := res(mode, 1, targetDirect)
			if !okS || !okD {
				return goalValue{}
			}
			added := (s.bench.latencyMS - d.bench.latencyMS) * 1000
			return goalValue{measured: true, text: fmt.Sprintf("%+.0f µs", added), met: added <= latencyGoalMicros}
		}))
	}
	// Memory per idle client: plaintext on each engine; TLS on
	// sluice-tls, which has the loop engine's configuration.
	checks = append(checks, check(fmt.Sprintf("RSS ≤ %d KiB per idle plaintext client", idleGoalKiB),
		fmt.Sprintf("%s idle clients", thousands(idleGoalClients)), func(e string) goalValue {
			return b.idleGoalValue(e, idleGoalKiB)
		}))
	tlsGoal := goalCheck{goal: fmt.Sprintf("RSS ≤ %d KiB per idle TLS client", idleTLSGoalKiB),
		where: fmt.Sprintf("%s idle TLS clients (%s)", thousands(idleGoalClients), targetSluiceTLS), values: map[string]goalValue{}}
	if slices.Contains(engines, targetSluice) {
		tlsGoal.values[targetSluice] = b.idleGoalValue(targetSluiceTLS, idleTLSGoalKiB)
	}
	checks = append(checks, tlsGoal)
	// -M prepared TPS over direct's.
	for _, clients := range preparedGoalClients {
		checks = append(checks, check(fmt.Sprintf("-M prepared TPS ≥ %.1fx direct", preparedGoalRatio), where("prepared", clients), func(e string) goalValue {
			s, okS := res("prepared", clients, e)
			d, okD := res("prepared", clients, targetDirect)
			if !okS || !okD || d.bench.tps <= 0 {
				return goalValue{}
			}
			ratio := s.bench.tps / d.bench.tps
			return goalValue{measured: true, text: fmt.Sprintf("%.2fx", ratio), met: ratio >= preparedGoalRatio}
		}))
	}
	return checks
}

// idleGoalValue evaluates the idle stage's figure for target against
// limit KiB per idle client.
func (b *bench) idleGoalValue(target string, limit float64) goalValue {
	i := slices.IndexFunc(b.idle, func(r idleResult) bool { return r.target == target })
	if i < 0 {
		return goalValue{}
	}
	r := b.idle[i]
	per, ok := r.perClientKiB()
	if !ok || per < 0 {
		// RSS that fell while clients came measures the runtime giving
		// memory back, not the clients.
		return goalValue{}
	}
	v := goalValue{measured: true, text: fmt.Sprintf("%.2f KiB", per), met: per <= limit}
	var remarks []string
	if r.clients != idleGoalClients {
		remarks = append(remarks, fmt.Sprintf("at %s idle clients, not %s", thousands(r.clients), thousands(idleGoalClients)))
	}
	if r.failed > 0 {
		remarks = append(remarks, fmt.Sprintf("%d of %d failed to connect", r.failed, r.clients))
	}
	v.remark = strings.Join(remarks, "; ")
	return v
}

// where names a mode and client count.
func where(mode string, clients int) string {
	if clients == 1 {
		return fmt.Sprintf("-M %s, 1 client", mode)
	}
	return fmt.Sprintf("-M %s, %s clients", mode, thousands(clients))
}

// thousands renders n with a comma between thousands: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// writeGoals writes the targets paragraph: every goal, evaluated for the
// loop engine and, beside it, the goroutine engine, and a summary per
// engine.
func (b *bench) writeGoals(w *strings.Builder) {
	engines := b.engines()
	if len(engines) == 0 {
		return
	}
	checks := b.evaluateGoals()
	fmt.Fprintf(w, "Targets (issue 9), evaluated for %s from the figures above: CPU per transaction ≤ %.2fx PgBouncer's at 10 and 100 clients "+
		"and ≤ %.2fx at 1,000; TPS ≥ %.1fx PgBouncer's at 10, 100 and 1,000 clients (in every mode PgBouncer runs); average latency added "+
		"over direct at one client ≤ %d µs; RSS per idle plaintext client ≤ %d KiB at %s idle clients (≤ %d KiB with TLS, evaluated on "+
		"%s, which has the loop engine's configuration plus TLS: \"-\" for the goroutine engine); -M prepared TPS ≥ %.1fx direct at 10 "+
		"and 100 clients. Ratios are of unrounded figures. \"not measured\": the run was not made (client count or mode not given, or a "+
		"stage not enabled) or failed.\n\n",
		engineNames(engines), cpuGoalRatio, cpuGoalRatio1000, tpsGoalRatio, latencyGoalMicros, idleGoalKiB, thousands(idleGoalClients),
		idleTLSGoalKiB, targetSluiceTLS, preparedGoalRatio)
	header := []string{"target", "where"}
	for _, e := range engines {
		header = append(header, engineName(e))
	}
	writeRow(w, header)
	sep := []string{"---", "---"}
	for range engines {
		sep = append(sep, "---")
	}
	writeRow(w, sep)
	for _, c := range checks {
		row := []string{c.goal, c.where}
		for _, e := range engines {
			row = append(row, c.cell(e))
		}
		writeRow(w, row)
	}
	w.WriteString("\n")
	for _, e := range engines {
		var met, missed, unmeasured int
		var missedWhere []string
		for _, c := range checks {
			v, applies := c.values[e]
			switch {
			case !applies:
			case !v.measured:
				unmeasured++
			case v.met:
				met++
			default:
				missed++
				missedWhere = append(missedWhere, fmt.Sprintf("%s at %s (%s)", c.goal, c.where, v.text))
			}
		}
		fmt.Fprintf(w, "%s: %d met, %d NOT met, %d not measured", engineName(e), met, missed, unmeasured)
		if missed > 0 {
			fmt.Fprintf(w, ". NOT met: %s", strings.Join(missedWhere, "; "))
		}
		w.WriteString(".\n\n")
	}
	b.writeTLSCost(w)
}

// writeTLSCost writes, per mode the TLS targets ran in and client count
// of the CPU goals, what a TLS pairing costs per transaction: sluice-tls
// next to plaintext sluice and to pgbouncer-tls, and pgbouncer-tls next
// to plaintext pgbouncer. The issue asks for the measurement and sets no
// target for it.
func (b *bench) writeTLSCost(w *strings.Builder) {
	o := b.opts
	if !slices.Contains(o.targets, targetSluiceTLS) && !slices.Contains(o.targets, targetPgBouncerTLS) {
		return
	}
	perTx := func(mode string, clients int, target string) (float64, bool) {
		r, ok := b.results[resultKey{mode: mode, clients: clients, target: target}]
		if !ok {
			return 0, false
		}
		return cpuPerTx(r, o.duration)
	}
	var lines []string
	for _, mode := range tlsModes {
		if !slices.Contains(o.modes, mode) {
			continue
		}
		for _, clients := range tpsGoalClients {
			if !slices.Contains(o.clients, clients) {
				continue
			}
			var parts []string
			for _, pair := range [][2]string{{targetSluiceTLS, targetSluice}, {targetPgBouncerTLS, targetPgBouncer}} {
				tlsCPU, ok := perTx(mode, clients, pair[0])
				if !ok {
					continue
				}
				part := fmt.Sprintf("%s %.1f µs", pair[0], tlsCPU*1e6)
				if plain, ok := perTx(mode, clients, pair[1]); ok && plain > 0 {
					part += fmt.Sprintf(" (%.2fx %s's plaintext %.1f µs)", tlsCPU/plain, pair[1], plain*1e6)
				}
				parts = append(parts, part)
			}
			s, okS := perTx(mode, clients, targetSluiceTLS)
			p, okP := perTx(mode, clients, targetPgBouncerTLS)
			if okS && okP && p > 0 {
				parts = append(parts, fmt.Sprintf("sluice-tls/pgbouncer-tls %.2fx", s/p))
			}
			if len(parts) > 0 {
				lines = append(lines, fmt.Sprintf("- %s: %s", where(mode, clients), strings.Join(parts, "; ")))
			}
		}
	}
	w.WriteString("CPU per transaction of a TLS pairing, next to a plaintext one and to PgBouncer's TLS (issue 9 asks for this measurement " +
		"and sets no target number for it, so it is not counted above):\n")
	if len(lines) == 0 {
		w.WriteString("- not measured\n")
	}
	for _, l := range lines {
		w.WriteString(l + "\n")
	}
	w.WriteString("\n")
}

// engineName names an engine target with its engine.
func engineName(target string) string {
	switch target {
	case targetSluice:
		return "sluice (loop)"
	case targetSluiceGoroutine:
		return "sluice-goroutine (goroutine)"
	}
	return target
}

// engineNames lists the engine targets for prose.
func engineNames(targets []string) string {
	switch len(targets) {
	case 0:
		return ""
	case 1:
		return engineName(targets[0])
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = engineName(t)
	}
	return strings.Join(names[:len(names)-1], ", ") + " and, beside it, " + names[len(names)-1]
}
