package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicedb/sluice/core/config"
)

// filterTargetRatio is the target for sluice+readwrite's TPS over
// sluice's, at filterTargetClients.
const filterTargetRatio = 0.9

// filterTargetClients are the client counts the TPS target is set at.
var filterTargetClients = []int{10, 100}

// writeFilter writes the filter's section: per mode and client count,
// sluice next to sluice+readwrite, their TPS ratio and CPU per
// transaction, whether the TPS target is met, then the hook-cost
// benchmark.
func (b *bench) writeFilter(w *strings.Builder) {
	o := b.opts
	if !slices.Contains(o.targets, targetFilter) {
		return
	}
	fmt.Fprintf(w, "Filter on the statement hook: the same pgbench -S runs through a second Sluice (\"%s\") configured exactly like \"sluice\" "+
		"plus `filter \"readwrite\"` (%s built to .wasm; default timeout %s, fail_safe, default instances: twice GOMAXPROCS, at least 4), next to the sluice target above; the two take turns going first. "+
		"To measure the filter and not replica routing, the cluster has no replica and `reader_fallback = \"writer\"`: the filter's decisions "+
		"are real (it sends every pgbench statement, a read outside a transaction, to a replica), and Sluice runs them on the writer's "+
		"read-only pool (same server, same pool size %d, sessions started with default_transaction_read_only on, checked before the runs), "+
		"so both targets do the same work on the same server. CPU is the proxy's user+system time per transaction in µs; "+
		"\"added CPU\" is the difference, to set beside the hook cost below. Target: %s/sluice TPS ≥ %.2f at %s clients.\n\n",
		targetFilter, filterDir, config.DefaultFilterTimeout, o.poolSize, targetFilter, filterTargetRatio, joinInts(filterTargetClients, " and "))
	writeRow(w, []string{"mode", "clients", "sluice TPS", "sluice lat ms", targetFilter + " TPS", targetFilter + " lat ms",
		targetFilter + "/sluice TPS", "sluice CPU µs/tx", targetFilter + " CPU µs/tx", "added CPU µs/tx"})
	writeRow(w, []string{"---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"})
	var verdicts []string
	for _, mode := range o.modes {
		for _, clients := range o.clients {
			s, okS := b.results[resultKey{mode: mode, clients: clients, target: targetSluice}]
			f, okF := b.results[resultKey{mode: mode, clients: clients, target: targetFilter}]
			ratio, ratioCell := 0.0, ""
			if okS && okF && succeeded(s) && succeeded(f) && s.bench.tps > 0 {
				ratio = f.bench.tps / s.bench.tps
				ratioCell = fmt.Sprintf("%.2f", ratio)
			}
			added := ""
			if okS && okF {
				perS, okPS := cpuPerTx(s, o.duration)
				perF, okPF := cpuPerTx(f, o.duration)
				if okPS && okPF {
					added = fmt.Sprintf("%+.1f", (perF-perS)*1e6)
				}
			}
			writeRow(w, []string{mode, strconv.Itoa(clients), tpsCell(s, okS), latencyCell(s, okS), tpsCell(f, okF), latencyCell(f, okF),
				orDash(ratioCell), cpuMicrosCell(s, okS, o.duration), cpuMicrosCell(f, okF, o.duration), orDash(added)})
			if !slices.Contains(filterTargetClients, clients) || !okS || !okF {
				continue
			}
			switch {
			case ratioCell == "":
				verdicts = append(verdicts, fmt.Sprintf("-M %s %d clients not measured", mode, clients))
			case ratio >= filterTargetRatio:
				verdicts = append(verdicts, fmt.Sprintf("-M %s %d clients %s met", mode, clients, ratioCell))
			default:
				verdicts = append(verdicts, fmt.Sprintf("-M %s %d clients %s NOT met", mode, clients, ratioCell))
			}
		}
	}
	w.WriteString("\n")
	if len(verdicts) > 0 {
		fmt.Fprintf(w, "TPS target (%s/sluice ≥ %.2f at %s clients): %s.\n\n",
			targetFilter, filterTargetRatio, joinInts(filterTargetClients, " and "), strings.Join(verdicts, "; "))
	}
	b.writeHookCost(w)
}

// writeHookCost writes the hook-cost benchmark's figures.
func (b *bench) writeHookCost(w *strings.Builder) {
	h := b.hook
	if !h.ran {
		return
	}
	fmt.Fprintf(w, "Filter hook cost: `go %s` (after the pgbench runs, with the proxies idle): one call of the readwrite filter's statement hook "+
		"through filters.SessionPolicy.Decide, deadline timer and instance pool included, one instance, %d calls. Target: median ≤ %.0f µs.\n\n",
		strings.Join(hookBenchArgs(), " "), hookBenchCalls, float64(hookTargetNS)/1000)
	if h.err != nil {
		fmt.Fprintf(w, "The benchmark failed:\n\n```\n%v\n```\n\n", h.err)
		return
	}
	verdict := "met"
	if h.medianNS > hookTargetNS {
		verdict = "NOT met"
	}
	allocs := ""
	if h.allocs >= 0 {
		allocs = fmt.Sprintf(", %g allocs/call", h.allocs)
	}
	if h.failures >= 0 && h.late >= 0 {
		allocs += fmt.Sprintf(", %g of %d calls failed and %g were late (past the timeout, answer used)", h.failures, h.iterations, h.late)
	}
	fmt.Fprintf(w, "Median %s, p99 %s, mean %s%s: median target %s.\n\n", micros(h.medianNS), micros(h.p99NS), micros(h.nsPerOp), allocs, verdict)
	fmt.Fprintf(w, "```\n%s\n```\n\n", h.line)
}

// cpuMicrosCell renders a proxy's CPU µs per transaction.
func cpuMicrosCell(r runResult, ok bool, duration time.Duration) string {
	if !ok {
		return ""
	}
	perTx, ok := cpuPerTx(r, duration)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", perTx*1e6)
}

// micros renders nanoseconds as microseconds.
func micros(ns float64) string {
	return fmt.Sprintf("%.2f µs", ns/1000)
}

// joinInts joins numbers with sep.
func joinInts(ns []int, sep string) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, sep)
}
