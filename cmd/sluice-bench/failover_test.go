package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{ms(700), 700 * time.Millisecond},
		{ms(900, 100, 500), 500 * time.Millisecond},
		{ms(400, 100, 300, 200), 250 * time.Millisecond},
	} {
		in := slices.Clone(tc.in)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("median reordered its argument: %v", tc.in)
		}
	}
}

func TestFailoverMarkdown(t *testing.T) {
	f := &failoverBench{
		opts: failoverOptions{modes: []string{modeDiscovery, modeProbe}, writers: 50, idle: 20, poolSize: 20,
			interval: time.Second, load: time.Second, after: 500 * time.Millisecond, execMode: "exec"},
		results: map[string][]failoverRun{},
		env:     failoverEnv{started: time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC), cpus: 2},
	}
	run := func(first, told time.Duration, kept int) failoverRun {
		return failoverRun{toFirstWrite: first, stopToFirstWrite: first + 30*time.Millisecond, promotion: 30 * time.Millisecond,
			told: told, committed: 3000, failed: 20, codes: map[string]int{"08007": 20}, maxFailedPerClient: 1, idleKept: kept, idle: 20}
	}
	f.results[modeDiscovery] = []failoverRun{run(200*time.Millisecond, 150*time.Millisecond, 20), run(300*time.Millisecond, 250*time.Millisecond, 20)}
	f.results[modeProbe] = []failoverRun{run(1500*time.Millisecond, 0, 20), run(1300*time.Millisecond, 0, 19), {err: io.ErrUnexpectedEOF}}
	report := f.markdown()
	for _, want := range []string{
		"| run | promotion → first write s | stop → first write s | promote s | Consul told s | told → first write s | committed | failed tx | max/client | disconnected | idle kept |",
		"| 1 | 0.200 | 0.230 | 0.030 | 0.150 | 0.050 | 3000 | 20 (08007 ×20) | 1 | 0 | 20/20 |",
		"over 2 completed runs (of 2): **0.250 s**; idle clients kept 40/40. Target (median ≤ 1 s, every idle client kept, every run completed): met.",
		"| run | promotion → first write s | stop → first write s | promote s | committed | failed tx | max/client | disconnected | idle kept |",
		"| 2 | 1.300 | 1.330 | 0.030 | 3000 | 20 (08007 ×20) | 1 | 0 | 19/20 |",
		"| 3 | failed | - | - | - | - | - | - | - |",
		"over 2 completed runs (of 3): **1.400 s**; idle clients kept 39/40. Target (median ≤ 1 s, every idle client kept, every run completed): **not met**.",
		"- date: 2026-12-03T14:00:00Z",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}

func TestParseFailoverFlags(t *testing.T) {
	o, err := parseFailoverFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.runs != 5 || o.writers != 50 || o.idle != 20 || !slices.Equal(o.modes, []string{modeDiscovery, modeProbe}) {
		t.Errorf("defaults = %+v, want 5 runs of 50 writers and 20 idle clients in both modes", o)
	}
	for _, args := range [][]string{{"-modes", "consul"}, {"-runs", "0"}, {"-exec-mode", "simple"}, {"extra"}} {
		if _, err := parseFailoverFlags(args, io.Discard); err == nil {
			t.Errorf("parseFailoverFlags(%q) succeeded", args)
		}
	}
}
