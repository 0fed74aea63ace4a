package proxy_test

import "testing"

// Failover found by probing (hosts, promotion = probe, nothing else told):
// the primary stops, its replica is promoted, and Sluice's probes find the
// new writer. Only transactions in flight at the failure may fail; later
// ones wait for the new writer; idle clients keep their connections and
// their next transaction runs on the new writer (see failoverUnderLoad).
func TestFailoverFoundByProbing(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, probe: true, pool: `max_connections = 40
  borrow_timeout = "30s"`})
	failoverUnderLoad(t, e, 10, 10, nil)
}
