package config

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConsulCluster(t *testing.T) {
	src := hclFile(baseListen, `cluster "main" {
  consul {
    address    = "http://127.0.0.1:18500"
    service    = "pg-main"
    datacenter = "dc2"
    token      = "env:CONSUL_TOKEN"
  }
  monitor_user          = "monitor"
  max_replica_lag       = "5s"
  max_replica_lag_bytes = 1048576
  read_your_writes      = true
}`, baseAuth, `admin {
  address = "127.0.0.1:9930"
  register {
    service = "sluice-edge"
    tags    = ["Blue", "eu"]
  }
}`, `pool {
  max_connections = 30
  replica { max_connections = 10 }
}`)
	cfg, err := Parse([]byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	cl := cfg.Clusters["main"]
	want := Consul{Address: "http://127.0.0.1:18500", Service: "pg-main", WriterTag: "primary", ReplicaTag: "replica", Datacenter: "dc2", Token: "env:CONSUL_TOKEN"}
	if cl.Consul == nil || *cl.Consul != want {
		t.Errorf("consul = %+v, want %+v", cl.Consul, want)
	}
	if cl.PromotionMode() != PromotionDiscovery || !cl.Probed() {
		t.Errorf("promotion %q probed %v, want discovery and probed", cl.PromotionMode(), cl.Probed())
	}
	if cl.MaxReplicaLag != 5*time.Second || cl.MaxReplicaLagBytes != 1<<20 || !cl.ReadYourWrites || cl.ReadYourWritesWait != 0 {
		t.Errorf("lag %s/%d, read_your_writes %v wait %s", cl.MaxReplicaLag, cl.MaxReplicaLagBytes, cl.ReadYourWrites, cl.ReadYourWritesWait)
	}
	r := cfg.Admin.Register
	if r == nil || r.Service != "sluice-edge" || !slices.Equal(r.Tags, []string{"Blue", "eu"}) {
		t.Errorf("register = %+v; tags keep their case", r)
	}
	if cfg.Pool.ReplicaMaxConnections != 10 || cfg.Pool.ReplicaMaxIdleConnections != 10 || cfg.Pool.MaxConnections != 30 {
		t.Errorf("pool = %+v", cfg.Pool)
	}
}

func TestParseDiscoveryErrors(t *testing.T) {
	tests := []struct {
		name, cluster, extra string
		want                 string
	}{
		{"consul without service", `consul { address = "127.0.0.1:8500" }`, "",
			`cluster "main".consul.service: required`},
		{"consul with a writer", `writer = "127.0.0.1:5432"
  consul { service = "pg" }`, "", `cluster "main".consul: cannot be combined with writer`},
		{"consul bad address", `consul {
    service = "pg"
    address = "ftp://x"
  }`, "", `cluster "main".consul.address: must be host:port`},
		{"same tags", `consul {
    service     = "pg"
    writer_tag  = "pg"
    replica_tag = "pg"
  }`, "", `writer_tag and replica_tag must be set and differ`},
		{"probe promotion without monitor", `writer = "127.0.0.1:5432"
  promotion = "probe"`, "", `cluster "main".promotion: needs monitor_user`},
		{"unknown promotion", `writer = "127.0.0.1:5432"
  monitor_user = "m"
  promotion = "vote"`, "", `cluster "main".promotion: must be one of "probe", "discovery"; got "vote"`},
		{"lag without monitor", `writer = "127.0.0.1:5432"
  max_replica_lag = "1s"`, "", `cluster "main".max_replica_lag: needs monitor_user`},
		{"negative lag bytes", `writer = "127.0.0.1:5432"
  max_replica_lag_bytes = -1`, "", `max_replica_lag_bytes: must not be negative`},
		{"register without admin address", `writer = "127.0.0.1:5432"`, `admin {
  register { service = "sluice" }
}`, `admin.register: needs admin.address`},
		{"replica idle above max", `writer = "127.0.0.1:5432"`, `pool {
  replica {
    max_connections = 2
    max_idle_connections = 3
  }
}`, `pool.replica.max_idle_connections: must be between 0 and pool.replica.max_connections (2), got 3`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := hclFile(baseListen, "cluster \"main\" {\n  "+tt.cluster+"\n}", baseAuth, tt.extra)
			_, err := Parse([]byte(src), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseFilters(t *testing.T) {
	dir := t.TempDir()
	mod := dir + "/f.wasm"
	if err := os.WriteFile(mod, []byte("\x00asm"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := minimal(`filter "readwrite" {
  module         = "`+mod+`"
  failure_policy = "fail_closed"
  timeout        = "3ms"
  memory_limit   = "64MiB"
  instances      = 4
  config {
    replica_for = "select"
    tenants {
      acme = "cluster_a"
    }
    users = ["a", "b"]
  }
}`, `filter "guard" {
  module = "`+mod+`"
}`)
	cfg, err := Parse([]byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(cfg.Filters) != 2 || cfg.Filters[0].Name != "readwrite" || cfg.Filters[1].Name != "guard" {
		t.Fatalf("filters %+v, want readwrite then guard (file order)", cfg.Filters)
	}
	f := cfg.Filters[0]
	if f.FailurePolicy != FailClosed || f.Timeout != 3*time.Millisecond || f.MemoryLimit != 64<<20 || f.Instances != 4 {
		t.Errorf("filter %+v", f)
	}
	var got map[string]any
	if err := json.Unmarshal(f.Config, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"replica_for": "select", "tenants": map[string]any{"acme": "cluster_a"}, "users": []any{"a", "b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config JSON %s, want %v", f.Config, want)
	}
	g := cfg.Filters[1]
	if g.FailurePolicy != FailSafe || g.Timeout != DefaultFilterTimeout || g.MemoryLimit != DefaultFilterMemory || string(g.Config) != "{}" {
		t.Errorf("defaults not applied: %+v", g)
	}

	for _, tc := range []struct{ body, want string }{
		{`module = "/nonexistent.wasm"`, `filter "x".module: cannot read`},
		{`module = "` + mod + `"
  failure_policy = "ignore"`, `filter "x".failure_policy: must be one of "fail_safe", "fail_closed"`},
		{`module = "` + mod + `"
  memory_limit = "1MiB"`, `filter "x".memory_limit: must be between 16MiB`},
		{`module = "` + mod + `"
  memory_limit = "lots"`, `filter "x".memory_limit: must be a size`},
		{`module = "` + mod + `"
  timeout = "0s"`, `filter "x".timeout: must be greater than 0`},
		{`module = "` + mod + `"
  modul = "x"`, `did you mean "module"?`},
	} {
		_, err := Parse([]byte(minimal("filter \"x\" {\n  "+tc.body+"\n}")), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.body, err, tc.want)
		}
	}
}
