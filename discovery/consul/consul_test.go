package consul

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

func entry(id, addr string, port int, tags []string, meta map[string]string, status string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Address: "10.0.0.9"},
		Service: &api.AgentService{ID: id, Address: addr, Port: port, Tags: tags, Meta: meta},
		Checks:  api.HealthChecks{{Status: status}},
	}
}

func TestSnapshotRoles(t *testing.T) {
	s := &Source{WriterTag: "primary", ReplicaTag: "replica"}
	snap, w, ignored := s.snapshot([]*api.ServiceEntry{
		entry("a", "10.0.0.1", 5432, []string{"primary"}, nil, api.HealthPassing),
		entry("b", "", 5432, []string{"replica"}, nil, api.HealthPassing), // the node's address
		entry("c", "10.0.0.3", 5432, []string{"primary"}, map[string]string{"role": "replica"}, api.HealthCritical),
		entry("d", "10.0.0.4", 5432, []string{"other"}, nil, api.HealthPassing),
	}, "")
	if w != "10.0.0.1:5432" || snap.Writer == nil || snap.Writer.Source != "consul" {
		t.Fatalf("writer %q %+v", w, snap.Writer)
	}
	if len(snap.Replicas) != 2 || snap.Replicas[0].Addr != "10.0.0.3:5432" || snap.Replicas[0].Healthy || snap.Replicas[0].Why != "critical" ||
		snap.Replicas[1].Addr != "10.0.0.9:5432" || !snap.Replicas[1].Healthy {
		t.Fatalf("replicas %+v: the meta role wins over tags, a failing check is unhealthy", snap.Replicas)
	}
	if len(ignored) != 1 || ignored[0] != "d" {
		t.Errorf("ignored %v", ignored)
	}
}

func TestSnapshotNeverTwoWriters(t *testing.T) {
	s := &Source{WriterTag: "primary", ReplicaTag: "replica"}
	both := []*api.ServiceEntry{
		entry("a", "10.0.0.1", 5432, []string{"primary"}, nil, api.HealthPassing),
		entry("b", "10.0.0.2", 5432, []string{"primary"}, nil, api.HealthPassing),
	}
	if _, w, _ := s.snapshot(both, "10.0.0.2:5432"); w != "10.0.0.2:5432" {
		t.Errorf("two writers, b known: %q, want b kept", w)
	}
	if snap, w, _ := s.snapshot(both, ""); w != "" || snap.Writer != nil {
		t.Errorf("two writers, none known: %q, want none", w)
	}
	failing := []*api.ServiceEntry{entry("a", "10.0.0.1", 5432, []string{"primary"}, nil, api.HealthCritical)}
	if snap, _, _ := s.snapshot(failing, "10.0.0.1:5432"); snap.Writer != nil {
		t.Errorf("a writer with a failing check is taken: %+v", snap.Writer)
	}
}
