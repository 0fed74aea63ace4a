package filters

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the set's metrics for a Prometheus registry, per filter
// name (over every version a reload loaded) and per hook.
func (s *Set) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Set }

var (
	descCalls = prometheus.NewDesc("sluice_filter_calls_total",
		"Calls of a filter's hook.", []string{"filter", "hook"}, nil)
	descErrors = prometheus.NewDesc("sluice_filter_errors_total",
		"Calls of a filter's hook that failed, for any reason (the failure policy answered).", []string{"filter", "hook"}, nil)
	descTraps = prometheus.NewDesc("sluice_filter_traps_total",
		"Failed calls that were a trap, panic or exit of the guest.", []string{"filter", "hook"}, nil)
	descTimeouts = prometheus.NewDesc("sluice_filter_timeouts_total",
		"Calls stopped because they ran past twice the filter's timeout plus 5 ms (failures).", []string{"filter", "hook"}, nil)
	descLate = prometheus.NewDesc("sluice_filter_late_total",
		"Calls that finished past the filter's timeout but before they would have been stopped (their answer was used; usually a busy machine).", []string{"filter", "hook"}, nil)
	descLatency = prometheus.NewDesc("sluice_filter_call_seconds",
		"Time of a filter's hook calls, waiting for an instance included.", []string{"filter", "hook"}, nil)
	descTrips = prometheus.NewDesc("sluice_filter_breaker_trips_total",
		"Times a filter failed so often that it was skipped for a back-off period.", []string{"filter"}, nil)
	descConflicts = prometheus.NewDesc("sluice_filter_route_conflicts_total",
		"Routes a filter asked for inside a transaction whose server could not serve them (ignored).", []string{"filter"}, nil)
	descReloads = prometheus.NewDesc("sluice_filter_reloads_total",
		"Reloads of a filter's module, by result.", []string{"filter", "result"}, nil)
	descCounter = prometheus.NewDesc("sluice_filter_counter",
		"A filter's own counters (counter_add; a filter may add negative amounts).", []string{"filter", "name"}, nil)
	descGeneration = prometheus.NewDesc("sluice_filter_generation",
		"How many times the filter chain was loaded (1 at start, +1 per successful reload).", nil, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descErrors, descTraps, descTimeouts, descLate, descLatency,
		descTrips, descConflicts, descReloads, descCounter, descGeneration} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	byName := maps.Clone(c.s.metrics)
	c.s.mu.Unlock()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		m := byName[name]
		for i, hook := range hookNames {
			st := m.hook(i)
			counter(descCalls, st.Calls, name, hook)
			counter(descErrors, st.Errors, name, hook)
			counter(descTraps, st.Traps, name, hook)
			counter(descTimeouts, st.Timeouts, name, hook)
			counter(descLate, st.Late, name, hook)
			buckets := make(map[float64]uint64, len(latencyBounds))
			var cum uint64
			for j, b := range latencyBounds {
				cum += uint64(st.Buckets[j])
				buckets[b] = cum
			}
			cum += uint64(st.Buckets[len(latencyBounds)])
			ch <- prometheus.MustNewConstHistogram(descLatency, cum, st.LatencySum.Seconds(), buckets, name, hook)
		}
		counter(descTrips, m.trips.Load(), name)
		counter(descConflicts, m.conflicts.Load(), name)
		counter(descReloads, m.reloads.Load(), name, "ok")
		counter(descReloads, m.reloadsFailed.Load(), name, "error")
		for k, v := range m.counters.snapshot() {
			ch <- prometheus.MustNewConstMetric(descCounter, prometheus.GaugeValue, float64(v), name, k)
		}
	}
	ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(c.s.Generation()))
}
