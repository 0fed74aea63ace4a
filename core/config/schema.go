package config

import (
	"fmt"
	"strconv"
	"strings"
)

// kind says what a key of the file holds.
type kind int

const (
	// setting is a single value: address = "...".
	setting kind = iota
	// block appears at most once and has no name: pool { ... }.
	block
	// namedBlock may repeat, each with a unique name: listen "main" { ... }.
	namedBlock
	// list is a list of strings: track = ["a", "b"] (or "a,b" from the
	// environment).
	list
	// freeform is a block whose contents are not Sluice's to check: a
	// filter's config { ... }, handed to the filter as JSON.
	freeform
)

// key describes one key of the file and, for blocks, the keys inside.
type key struct {
	kind     kind
	children map[string]*key
}

// names returns the sorted names of the keys inside k.
func (k *key) names() []string {
	return sortedNames(k.children)
}

// schema is the shape of proxy.hcl. It is never modified.
var schema = &key{kind: block, children: map[string]*key{
	"listen": {kind: namedBlock, children: map[string]*key{
		"address":     {kind: setting},
		"cluster":     {kind: setting},
		"role":        {kind: setting},
		"require_tls": {kind: setting},
		"tls": {kind: block, children: map[string]*key{
			"cert_file": {kind: setting},
			"key_file":  {kind: setting},
		}},
	}},
	"pool": {kind: block, children: map[string]*key{
		"mode":                        {kind: setting},
		"max_connections":             {kind: setting},
		"max_idle_connections":        {kind: setting},
		"borrow_timeout":              {kind: setting},
		"idle_client_timeout":         {kind: setting},
		"server_idle_timeout":         {kind: setting},
		"server_lifetime":             {kind: setting},
		"init_query":                  {kind: setting},
		"connect_timeout":             {kind: setting},
		"idle_in_transaction_timeout": {kind: setting},
		"query_timeout":               {kind: setting},
		"replica": {kind: block, children: map[string]*key{
			"max_connections":      {kind: setting},
			"max_idle_connections": {kind: setting},
		}},
	}},
	"cluster": {kind: namedBlock, children: map[string]*key{
		"writer":                {kind: setting},
		"replicas":              {kind: list},
		"reader_fallback":       {kind: setting},
		"hosts":                 {kind: list},
		"monitor_user":          {kind: setting},
		"monitor_password":      {kind: setting},
		"health_check_interval": {kind: setting},
		"promotion":             {kind: setting},
		"max_replica_lag":       {kind: setting},
		"max_replica_lag_bytes": {kind: setting},
		"read_your_writes":      {kind: setting},
		"read_your_writes_wait": {kind: setting},
		"consul": {kind: block, children: map[string]*key{
			"address":     {kind: setting},
			"service":     {kind: setting},
			"writer_tag":  {kind: setting},
			"replica_tag": {kind: setting},
			"datacenter":  {kind: setting},
			"token":       {kind: setting},
			"tls": {kind: block, children: map[string]*key{
				"ca_file":              {kind: setting},
				"cert_file":            {kind: setting},
				"key_file":             {kind: setting},
				"server_name":          {kind: setting},
				"insecure_skip_verify": {kind: setting},
			}},
		}},
		"tls": {kind: block, children: map[string]*key{
			"mode":        {kind: setting},
			"ca_file":     {kind: setting},
			"server_name": {kind: setting},
		}},
	}},
	"auth": {kind: block, children: map[string]*key{
		"method": {kind: setting},
		"user": {kind: namedBlock, children: map[string]*key{
			"password":         {kind: setting},
			"backend_user":     {kind: setting},
			"backend_password": {kind: setting},
		}},
	}},
	"pinning": {kind: block, children: map[string]*key{
		"track":                          {kind: list},
		"on_set":                         {kind: setting},
		"max_prepared_statements":        {kind: setting},
		"max_client_prepared_statements": {kind: setting},
	}},
	"admin": {kind: block, children: map[string]*key{
		"address": {kind: setting},
		"pprof":   {kind: setting},
		"register": {kind: block, children: map[string]*key{
			"service":        {kind: setting},
			"tags":           {kind: list},
			"consul":         {kind: setting},
			"token":          {kind: setting},
			"address":        {kind: setting},
			"check_interval": {kind: setting},
		}},
	}},
	"log": {kind: block, children: map[string]*key{
		"level":  {kind: setting},
		"format": {kind: setting},
	}},
	"filter": {kind: namedBlock, children: map[string]*key{
		"module":         {kind: setting},
		"failure_policy": {kind: setting},
		"timeout":        {kind: setting},
		"memory_limit":   {kind: setting},
		"instances":      {kind: setting},
		"real_clock":     {kind: setting},
		"config":         {kind: freeform},
	}},
	"shutdown_timeout": {kind: setting},
	"engine":           {kind: setting},
	"event_loops":      {kind: setting},
}}

// join returns the display path of name inside the block at path, such as
// pool.max_connections; path is empty at the top level.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// joinNamed returns the display path of a named block, such as
// listen "main" or auth.user "app".
func joinNamed(path, name, label string) string {
	return join(path, name) + " " + strconv.Quote(label)
}

// unknownKey reports the key name, unknown inside the block at path, whose
// known keys are candidates.
func unknownKey(path, name string, candidates []string) error {
	full := join(path, name)
	if !strings.Contains(full, `"`) {
		full = strconv.Quote(full)
	}
	return fmt.Errorf("unknown key %s%s", full, suggest(name, candidates))
}

// suggest returns `, did you mean "x"?` for the candidate closest to name
// when it is at most two edits away, and "" otherwise.
func suggest(name string, candidates []string) string {
	best, bestDistance := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(name), strings.ToLower(c)); d < bestDistance {
			best, bestDistance = c, d
		}
	}
	if best == "" || best == name {
		return ""
	}
	return fmt.Sprintf(", did you mean %q?", best)
}

// editDistance returns the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
