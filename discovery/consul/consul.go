// Package consul is a topology source that reads a cluster's servers from
// a Consul service: its instances with a passing health check, each a
// writer or a replica by a "role" service-meta key or by its tags. It
// watches with blocking queries, so a change reaches Sluice as soon as
// Consul knows it. When Consul cannot be reached it keeps the last
// topology it reported (Sluice goes on serving it), reports the failure
// as the source's status, and retries with back-off.
package consul

import (
	"context"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/sluicedb/sluice/core/topology"
)

// Source watches one Consul service.
type Source struct {
	// Client is the Consul API client (address, token, TLS).
	Client *api.Client
	// Service is the service name the cluster's servers register.
	Service string
	// WriterTag and ReplicaTag give an instance its role; a service-meta
	// key "role" ("writer", "replica" or one of the two tags) wins.
	WriterTag, ReplicaTag string
	// Datacenter is the datacenter to query; empty means the agent's.
	Datacenter string
	// Wait is the longest a blocking query waits for a change; zero
	// means DefaultWait.
	Wait time.Duration
	Log  *zap.Logger
}

// DefaultWait is a blocking query's wait when Source.Wait is zero.
const DefaultWait = 30 * time.Second

// The retry delays after Consul fails to answer: doubled from
// minBackoff up to maxBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Run implements topology.Source.
func (s *Source) Run(ctx context.Context, sink topology.Sink) {
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	wait := s.Wait
	if wait <= 0 {
		wait = DefaultWait
	}
	var (
		index   uint64
		writer  string // the writer last reported
		backoff time.Duration
		lastOK  time.Time
		failing bool
	)
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait, Datacenter: s.Datacenter}).WithContext(ctx)
		entries, meta, err := s.Client.Health().Service(s.Service, "", false, q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if !failing {
				log.Warn("consul unreachable: serving the last topology it gave", zap.String("service", s.Service), zap.Error(err))
			} else {
				log.Debug("consul still unreachable", zap.Error(err), zap.Duration("retry_in", backoff))
			}
			failing = true
			sink.ReportStatus(topology.Status{Source: "consul", LastOK: lastOK, Err: err.Error()})
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		if failing {
			log.Info("consul reachable again", zap.String("service", s.Service), zap.Duration("down_for", time.Since(lastOK)))
		}
		failing, backoff, lastOK = false, 0, time.Now()
		sink.ReportStatus(topology.Status{Source: "consul", LastOK: lastOK})
		// An index that goes backwards (a Consul restore or restart)
		// starts over; one that does not move is a wait that timed out.
		switch {
		case meta.LastIndex < index:
			index = 0
			continue
		case meta.LastIndex == index:
			continue
		}
		index = meta.LastIndex
		snap, w, ignored := s.snapshot(entries, writer)
		for _, id := range ignored {
			log.Warn("consul: instance has no role (neither tag nor meta role); ignored", zap.String("service", s.Service), zap.String("id", id))
		}
		if w != writer {
			log.Info("consul: writer", zap.String("was", writer), zap.String("now", w))
			writer = w
		}
		sink.Publish(snap)
	}
}

// snapshot turns the service's instances into a topology, given the
// writer reported so far. Instances whose checks are not passing are left
// out as writers and kept as unhealthy replicas. Two passing writers never
// make two: the known one stays if it is one of them, else there is none
// until only one remains. It returns the writer chosen and the IDs of
// instances with no role.
func (s *Source) snapshot(entries []*api.ServiceEntry, known string) (topology.Snapshot, string, []string) {
	var snap topology.Snapshot
	var writers, ignored []string
	for _, e := range entries {
		addr := address(e)
		passing := e.Checks.AggregatedStatus() == api.HealthPassing
		switch s.role(e.Service) {
		case roleWriter:
			if passing {
				writers = append(writers, addr)
			}
		case roleReplica:
			ep := topology.Endpoint{Addr: addr, Role: topology.Replica, Healthy: passing, Source: "consul"}
			if !passing {
				ep.Why = "critical"
			}
			snap.Replicas = append(snap.Replicas, ep)
		default:
			ignored = append(ignored, e.Service.ID)
		}
	}
	slices.Sort(writers)
	writers = slices.Compact(writers)
	writer := ""
	switch {
	case len(writers) == 1:
		writer = writers[0]
	case len(writers) > 1 && slices.Contains(writers, known):
		writer = known
	}
	if writer != "" {
		snap.Writer = &topology.Endpoint{Addr: writer, Role: topology.Writer, Healthy: true, Source: "consul"}
	}
	slices.SortFunc(snap.Replicas, func(a, b topology.Endpoint) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	return snap, writer, ignored
}

type role int

const (
	roleNone role = iota
	roleWriter
	roleReplica
)

// role reads an instance's role: its "role" meta key first, then tags.
func (s *Source) role(svc *api.AgentService) role {
	if svc == nil {
		return roleNone
	}
	switch m := svc.Meta["role"]; m {
	case "writer", "primary", s.WriterTag:
		return roleWriter
	case "replica", "reader", "standby", s.ReplicaTag:
		return roleReplica
	}
	switch {
	case slices.Contains(svc.Tags, s.WriterTag):
		return roleWriter
	case slices.Contains(svc.Tags, s.ReplicaTag):
		return roleReplica
	}
	return roleNone
}

// address is an instance's host:port: the service address, or its node's.
func address(e *api.ServiceEntry) string {
	host := e.Service.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
}
