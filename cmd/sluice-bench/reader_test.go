package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/sluicedb/sluice/core/config"
)

func TestReaderFlagAddsTheTarget(t *testing.T) {
	o, err := parseFlags([]string{"-reader"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"direct", "pgbouncer", "sluice", "sluice-goroutine", "reader"}; !slices.Equal(o.targets, want) {
		t.Errorf("targets with -reader = %v, want %v", o.targets, want)
	}
}

func TestReaderConfig(t *testing.T) {
	s := sluiceSetup{port: 7000, pgAddr: "127.0.0.1:5000", poolSize: 20, replicas: []string{"127.0.0.1:5001", "127.0.0.1:5002"}}
	cfg, err := config.Parse([]byte(s.configHCL()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.configHCL())
	}
	if l := cfg.Listeners[0]; l.Role != config.RoleReader {
		t.Errorf("listener role = %q, want reader", l.Role)
	}
	if c := cfg.Clusters["main"]; c.Writer != "127.0.0.1:5000" || !slices.Equal(c.Replicas, s.replicas) {
		t.Errorf("cluster writer %s, replicas %v; want 127.0.0.1:5000 and %v", c.Writer, c.Replicas, s.replicas)
	}
	s.replicas = nil
	cfg, err = config.Parse([]byte(s.configHCL()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Listeners[0]; l.Role == config.RoleReader || len(cfg.Clusters["main"].Replicas) != 0 {
		t.Errorf("without replicas: role %q, replicas %v; want a writer listener and none", l.Role, cfg.Clusters["main"].Replicas)
	}
}

func TestMarkdownReaderSection(t *testing.T) {
	b := reportBench(targetDirect, targetPgBouncer, targetSluice, targetReader)
	b.results[resultKey{mode: "simple", clients: 10, target: targetReader}] = runResult{
		bench: pgbenchResult{tps: 27000, latencyMS: 0.37, processed: 270000}, cpuSec: 8.1, hasCPU: true,
	}
	report := b.markdown()
	lines := tableLines(t, report)
	// The main table is the one without -reader; the reader has its own.
	if want := "| clients | direct TPS | direct lat ms | pgbouncer TPS | pgbouncer lat ms | sluice TPS | sluice lat ms | sluice/pgbouncer TPS | sluice CPU µs/tx | pgbouncer CPU µs/tx | sluice/pgbouncer CPU |"; lines[0] != want {
		t.Errorf("main table header = %q, want %q", lines[0], want)
	}
	for _, want := range []string{
		"| mode | clients | sluice writer TPS | sluice writer lat ms | reader TPS | reader lat ms | reader/writer TPS | reader CPU µs/tx |",
		"| simple | 10 | 18000 | 0.550 | 27000 | 0.370 | 1.50 | 30.0 |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}
