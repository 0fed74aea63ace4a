package proxy

import (
	"testing"
	"time"

	"github.com/sluicedb/sluice/core/topology"
)

// BenchmarkMetricsPerTransaction is what metrics add to one transaction
// of one request in transaction mode: the pool's borrow observed (one
// clock read more: Borrow read the clock before), and the engine's
// request timed (two monotonic clock reads) and counted (queries,
// transactions, the response histogram). Every goroutine shares one
// pool's series, as its clients do.
func BenchmarkMetricsPerTransaction(b *testing.B) {
	m := newMetrics(&Proxy{})
	o := m.poolObserver("main", topology.Writer, "appdb", "app")
	b.RunParallel(func(pb *testing.PB) {
		start := time.Now()
		for pb.Next() {
			o.Waited(time.Since(start))
			sent := time.Since(start)
			o.Served(time.Since(start)-sent, true)
		}
	})
}
