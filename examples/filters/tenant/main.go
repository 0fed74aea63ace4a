// Command tenant is a Sluice filter that serves each client session from
// its tenant's cluster. The tenant is the session's application_name or
// user, looked up in a map from the configuration when the session starts;
// every statement of the session then goes to that cluster (its writer, or
// its replicas when another filter or a reader listener says so). A session
// of an unknown tenant goes to a default cluster, is refused, or stays on the
// listener's cluster, as configured.
package main

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sluicedb/sluice/sdk"
)

// tenant is the filter. Its only state is its configuration, the same on
// every instance.
type tenant struct{}

// The configuration, set once by Configure on every instance.
var (
	byUser        bool              // the tenant is the user, not application_name
	clusters      map[string]string // tenant -> cluster
	counters      map[string]string // cluster -> the name of its counter
	fallback      string            // the cluster of unknown tenants, or ""
	rejectUnknown bool              // refuse the sessions of unknown tenants
	separator     string            // "" for exact matches only
)

// config is the filter's JSON configuration.
type config struct {
	// By names the session attribute that holds the tenant.
	By string `json:"by"`
	// Clusters maps each tenant to the name of a cluster block of
	// Sluice's configuration.
	Clusters map[string]string `json:"clusters"`
	// Default is the cluster of tenants not in Clusters.
	Default *string `json:"default"`
	// RejectUnknown refuses the sessions of tenants not in Clusters.
	RejectUnknown bool `json:"reject_unknown"`
	// Separator, when set, lets a name match the tenant it starts with:
	// "acme-web" is tenant "acme" with separator "-".
	Separator *string `json:"separator"`
}

// Limits that keep every counter name within the host's (64 bytes, 128
// names): one counter per cluster, plus "unknown" and "rejected".
const (
	counterPrefix  = "to_"
	maxClusterName = 64 - len(counterPrefix)
	maxClusters    = 126
)

// Configure implements sdk.Configurer.
func (tenant) Configure(c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	switch cfg.By {
	case "application_name", "user":
	case "":
		return errors.New(`by: missing: say "application_name" or "user"`)
	default:
		return fmt.Errorf(`by: must be "application_name" or "user", got %q`, cfg.By)
	}
	if len(cfg.Clusters) == 0 {
		return errors.New("clusters: must map at least one tenant to a cluster")
	}
	if cfg.Default != nil && cfg.RejectUnknown {
		return errors.New("default and reject_unknown: give one: an unknown tenant either goes to the default cluster or is refused")
	}
	if cfg.Separator != nil && *cfg.Separator == "" {
		return errors.New("separator: must not be empty (leave it out for exact matches only)")
	}
	names := make([]string, 0, len(cfg.Clusters))
	for t := range cfg.Clusters {
		names = append(names, t)
	}
	sort.Strings(names) // the first problem reported is the same on every load
	seen := make(map[string]string)
	for _, t := range names {
		if t == "" {
			return errors.New("clusters: a tenant name is empty")
		}
		if err := checkCluster(fmt.Sprintf("clusters.%s", t), cfg.Clusters[t]); err != nil {
			return err
		}
		seen[cfg.Clusters[t]] = counterPrefix + cfg.Clusters[t]
	}
	if cfg.Default != nil {
		if err := checkCluster("default", *cfg.Default); err != nil {
			return err
		}
		fallback = *cfg.Default
		seen[fallback] = counterPrefix + fallback
	}
	if len(seen) > maxClusters {
		return fmt.Errorf("clusters: %d different clusters; at most %d", len(seen), maxClusters)
	}
	byUser = cfg.By == "user"
	clusters, counters = cfg.Clusters, seen
	rejectUnknown = cfg.RejectUnknown
	if cfg.Separator != nil {
		separator = *cfg.Separator
	}
	return nil
}

// checkCluster checks the cluster name given under key.
func checkCluster(key, name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("%s: the cluster name is empty", key)
	case len(name) > maxClusterName:
		return fmt.Errorf("%s: the cluster name %q is longer than %d bytes", key, name, maxClusterName)
	}
	return nil
}

// SessionStart implements sdk.SessionStarter.
func (tenant) SessionStart(s sdk.Session) sdk.Decision {
	attr, name := "application_name", ""
	if byUser {
		attr, name = "user", s.User()
	} else {
		name = s.ApplicationName()
	}
	if c, ok := lookup(name); ok {
		sdk.Count(counters[c], 1)
		return sdk.Cluster(c)
	}
	sdk.Count("unknown", 1)
	switch {
	case fallback != "":
		sdk.Count(counters[fallback], 1)
		return sdk.Cluster(fallback)
	case rejectUnknown:
		sdk.Count("rejected", 1)
		return sdk.Reject("28000", "no cluster for "+attr+" "+quote(name))
	}
	return sdk.Default() // the listener's cluster
}

// lookup returns the cluster of the tenant called name: an exact match,
// else (with a separator) the longest part of name that ends just before
// a separator, so that "acme-eu-web" is "acme-eu" when both "acme-eu" and
// "acme" are tenants.
func lookup(name string) (string, bool) {
	if c, ok := clusters[name]; ok {
		return c, true
	}
	if separator == "" {
		return "", false
	}
	for end := len(name); ; {
		i := strings.LastIndex(name[:end], separator)
		if i <= 0 {
			return "", false
		}
		if c, ok := clusters[name[:i]]; ok {
			return c, true
		}
		end = i
	}
}

// quote quotes a client's name for its error message, cut to the length
// PostgreSQL allows a name (63 bytes) so that the message stays short.
func quote(name string) string {
	if len(name) > 63 {
		return strconv.Quote(name[:63]) + "..."
	}
	return strconv.Quote(name)
}

func init() { sdk.Register(tenant{}) }

func main() {}
