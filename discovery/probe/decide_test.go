package probe

import "testing"

func TestDecideNeverTwoWriters(t *testing.T) {
	hosts := []string{"a:1", "b:1", "c:1"}
	up := result{reachable: true}
	standby := result{reachable: true, inRecovery: true}
	for _, tc := range []struct {
		name  string
		rs    []result
		known string
		want  string
	}{
		{"one primary", []result{up, standby, standby}, "", "a:1"},
		{"writer lost", []result{{}, standby, standby}, "a:1", ""},
		{"promoted", []result{{}, up, standby}, "a:1", "b:1"},
		{"old primary back, new one known", []result{up, up, standby}, "b:1", "b:1"},
		{"two primaries, none known", []result{up, up, standby}, "c:1", ""},
	} {
		snap, w := decide(hosts, tc.rs, tc.known)
		if w != tc.want || (snap.Writer == nil) != (tc.want == "") || snap.Writer != nil && snap.Writer.Addr != tc.want {
			t.Errorf("%s: writer %q, want %q", tc.name, w, tc.want)
		}
		for _, r := range snap.Replicas {
			if r.Addr == w {
				t.Errorf("%s: %s is writer and replica", tc.name, w)
			}
		}
	}
}
