package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// markdown renders the failover report: the setup, one table per mode
// with its medians, the verdict against the targets, the machine and the
// notes.
func (f *failoverBench) markdown() string {
	var w strings.Builder
	o := f.opts
	fmt.Fprintf(&w, "## Failover under load (`make bench-failover`), %s\n\n", f.env.started.UTC().Format("2006-01-02"))
	fmt.Fprintf(&w, "Each run starts a fresh PostgreSQL primary and a streaming replica of it, registers them in a Consul agent "+
		"(tags primary and replica) and a Sluice, in the harness's process (core/proxy with discovery.Options), whose cluster is that "+
		"Consul service, with the superuser as monitor user, health_check_interval = %q, pool.max_connections = %d, borrow_timeout = %q, "+
		"transaction pooling. %d clients (pgx, %s mode) run write transactions (BEGIN; INSERT ... RETURNING inet_server_port(); COMMIT) "+
		"in a loop and %d more are connected and idle. After %s of load the primary is stopped (pg_ctl stop -m immediate) and the "+
		"replica promoted (pg_ctl promote). With promotion = \"discovery\" Consul is then updated (the old primary deregistered, the "+
		"replica re-registered with tag primary); with promotion = \"probe\" it is never told. The load goes on until %s after the first "+
		"commit on the new writer; then every idle client runs one INSERT.\n\n",
		o.interval.String(), o.poolSize, failoverBorrowWait, o.writers, o.execMode, o.idle, o.load, o.after)
	w.WriteString("- **promotion → first write**: from the moment the replica left recovery (seen by a connection of the harness polling " +
		"pg_is_in_recovery() every 2 ms) to the first commit on it through Sluice.\n" +
		"- **stop → first write**: from the end of the primary's shutdown to that commit: the whole write outage, the promotion included.\n" +
		"- **promote**: from the end of the shutdown to the replica leaving recovery (PostgreSQL's part).\n" +
		"- **Consul told**: in discovery mode, when the registration naming the new writer was in Consul's catalog, after the promotion; " +
		"**told → first write** is Sluice's own part of the outage.\n" +
		"- **failed tx**: load transactions that returned an error, with their SQLSTATEs; **max/client**: the most of one client.\n" +
		"- **idle kept**: idle clients whose next transaction committed on the new writer on the same connection.\n\n")

	for _, mode := range o.modes {
		runs := f.results[mode]
		if len(runs) == 0 {
			continue
		}
		fmt.Fprintf(&w, "### promotion = %q\n\n", mode)
		header := []string{"run", "promotion → first write s", "stop → first write s", "promote s"}
		if mode == modeDiscovery {
			header = append(header, "Consul told s", "told → first write s")
		}
		header = append(header, "committed", "failed tx", "max/client", "disconnected", "idle kept")
		writeRow(&w, header)
		sep := make([]string, len(header))
		for i := range sep {
			sep[i] = "---:"
		}
		writeRow(&w, sep)
		var firsts []time.Duration
		kept, idle := 0, 0
		for i, r := range runs {
			row := []string{strconv.Itoa(i + 1)}
			if r.err != nil {
				row = append(row, "failed")
				for len(row) < len(header) {
					row = append(row, "-")
				}
				writeRow(&w, row)
				continue
			}
			firsts = append(firsts, r.toFirstWrite)
			kept, idle = kept+r.idleKept, idle+r.idle
			row = append(row, seconds(r.toFirstWrite), seconds(r.stopToFirstWrite), seconds(r.promotion))
			if mode == modeDiscovery {
				row = append(row, seconds(r.told), seconds(r.toFirstWrite-r.told))
			}
			failed := strconv.FormatInt(r.failed, 10)
			if len(r.codes) > 0 {
				failed += " (" + sortedCodes(r.codes) + ")"
			}
			row = append(row, strconv.FormatInt(r.committed, 10), failed, strconv.Itoa(r.maxFailedPerClient),
				strconv.Itoa(r.disconnected), fmt.Sprintf("%d/%d", r.idleKept, r.idle))
			writeRow(&w, row)
		}
		w.WriteString("\n")
		if len(firsts) == 0 {
			w.WriteString("No run completed.\n\n")
			continue
		}
		med := median(firsts)
		verdict := "met"
		if med.Seconds() > targetFailoverSeconds || kept != idle || len(firsts) != len(runs) {
			verdict = "**not met**"
		}
		fmt.Fprintf(&w, "Median promotion → first write over %d completed runs (of %d): **%s s**; idle clients kept %d/%d. "+
			"Target (median ≤ %.0f s, every idle client kept, every run completed): %s.\n\n",
			len(firsts), len(runs), seconds(med), kept, idle, targetFailoverSeconds, verdict)
	}

	e := f.env
	w.WriteString("Machine:\n")
	item := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&w, "- %s: %s\n", name, value)
		}
	}
	item("date", e.started.UTC().Format(time.RFC3339))
	item("CPUs (nproc)", strconv.Itoa(e.cpus))
	item("CPU model", e.cpuModel)
	item("memory", e.memory)
	item("OS", e.os)
	item("kernel", e.kernel)
	item("Go", e.goVersion)
	item("PostgreSQL", e.postgres)
	item("Consul", e.consul)
	item("Sluice source", e.sluiceRev)
	if e.loadBefore != "" || e.loadAfter != "" {
		item("load average (1/5/15 min) before / after the runs", e.loadBefore+" / "+e.loadAfter)
	}
	if len(f.notes) > 0 {
		w.WriteString("\nNotes and problems:\n")
		for _, n := range f.notes {
			fmt.Fprintf(&w, "- %s\n", indent(n, "  ")[2:])
		}
	}
	return w.String()
}

// median returns the median of ds (the mean of the middle two for an even
// count); ds must not be empty.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// seconds renders d in seconds with millisecond precision.
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.3f", d.Seconds())
}
