package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsTargets(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string // a substring of the error; "" for none
	}{
		{
			name: "default without a baseline: both engines",
			want: []string{"direct", "pgbouncer", "sluice", "sluice-goroutine"},
		},
		{
			name: "-baseline-bin adds baseline to the default targets",
			args: []string{"-baseline-bin", "/tmp/old-sluice"},
			want: []string{"direct", "pgbouncer", "sluice", "sluice-goroutine", "baseline"},
		},
		{
			name: "explicit targets are kept in the canonical order",
			args: []string{"-baseline-bin", "/tmp/old-sluice", "-targets", "baseline,sluice"},
			want: []string{"sluice", "baseline"},
		},
		{
			name: "explicit targets without baseline leave it out",
			args: []string{"-baseline-bin", "/tmp/old-sluice", "-targets", "sluice"},
			want: []string{"sluice"},
		},
		{
			name:    "baseline without -baseline-bin",
			args:    []string{"-targets", "sluice,baseline"},
			wantErr: "baseline needs -baseline-bin",
		},
		{
			name:    "unknown target",
			args:    []string{"-targets", "sluice,odyssey"},
			wantErr: `"odyssey" is not one of direct, pgbouncer, sluice, sluice-goroutine, baseline, pgbouncer-tls, sluice-tls`,
		},
		{
			name: "-tls adds the TLS twins to the default targets, after the others",
			args: []string{"-tls"},
			want: []string{"direct", "pgbouncer", "sluice", "sluice-goroutine", "pgbouncer-tls", "sluice-tls"},
		},
		{
			name: "-tls adds the twin of each plaintext proxy given",
			args: []string{"-tls", "-targets", "sluice,direct"},
			want: []string{"direct", "sluice", "sluice-tls"},
		},
		{
			name: "a TLS target given by name needs no -tls",
			args: []string{"-targets", "sluice-tls,pgbouncer"},
			want: []string{"pgbouncer", "sluice-tls"},
		},
		{
			name:    "-tls without a proxy that has a TLS twin",
			args:    []string{"-tls", "-targets", "direct,sluice-goroutine"},
			wantErr: "-tls: give pgbouncer or sluice among the -targets",
		},
		{
			name:    "TLS targets without -M simple",
			args:    []string{"-tls", "-modes", "prepared,extended"},
			wantErr: "-modes: the TLS targets run in -M simple only",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(o.targets, tt.want) {
				t.Errorf("targets = %q, want %q", o.targets, tt.want)
			}
		})
	}
}

func TestParseFlagsBaselineBin(t *testing.T) {
	o, err := parseFlags([]string{"-sluice-bin", "/tmp/new-sluice", "-baseline-bin", "/tmp/old-sluice"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.sluiceBin != "/tmp/new-sluice" || o.baselineBin != "/tmp/old-sluice" {
		t.Errorf("sluiceBin, baselineBin = %q, %q", o.sluiceBin, o.baselineBin)
	}
	// The proxies run in their own directories, so a relative path is
	// made absolute against the harness's.
	o, err = parseFlags([]string{"-baseline-bin", "bin/old-sluice"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "bin/old-sluice"); o.baselineBin != want {
		t.Errorf("baselineBin = %q, want %q", o.baselineBin, want)
	}
}

func TestRunOrderAlternatesSluiceAndBaseline(t *testing.T) {
	names := func(ts []*target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.name)
		}
		return strings.Join(s, ",")
	}
	var all []*target
	for _, n := range allTargets {
		all = append(all, &target{name: n})
	}
	if got := names(runOrder(all, 0)); got != "direct,pgbouncer,sluice,sluice-goroutine,baseline,pgbouncer-tls,sluice-tls" {
		t.Errorf("order of combination 0 = %s", got)
	}
	// Sluice and baseline swap, and so do the two TLS targets.
	if got := names(runOrder(all, 1)); got != "direct,pgbouncer,baseline,sluice-goroutine,sluice,sluice-tls,pgbouncer-tls" {
		t.Errorf("order of combination 1 = %s", got)
	}
	if got := names(all); got != "direct,pgbouncer,sluice,sluice-goroutine,baseline,pgbouncer-tls,sluice-tls" {
		t.Errorf("runOrder changed the targets it was given: %s", got)
	}
	if got := names(runOrder(all[5:6], 1)); got != "pgbouncer-tls" {
		t.Errorf("order of one TLS target = %s", got)
	}
	// The default targets: the two engines take turns going first.
	engines := all[:4]
	if got := names(runOrder(engines, 1)); got != "direct,pgbouncer,sluice-goroutine,sluice" {
		t.Errorf("order of combination 1 without baseline = %s", got)
	}
	withoutBaseline := all[:3]
	if got := names(runOrder(withoutBaseline, 1)); got != "direct,pgbouncer,sluice" {
		t.Errorf("order without baseline = %s", got)
	}
}
