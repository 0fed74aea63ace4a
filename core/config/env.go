package config

import (
	"fmt"
	"slices"
	"strings"
)

// envPrefix starts the name of every environment override.
const envPrefix = "SLUICE_"

// envSeparator separates the path segments in the name of an override.
const envSeparator = "__"

// overrides are the environment overrides that apply to one file.
type overrides struct {
	// tree holds the overridden values, nested like document.tree.
	tree map[string]any
	// origin maps the display path of each overridden key to the variable
	// that set it, for error messages.
	origin map[string]string
	// problems are the overrides that could not be applied.
	problems []error
}

// readOverrides picks the overrides out of environ ("NAME=value" entries)
// and resolves them against file, the normalized file, whose named blocks
// they may change but not add. See the package documentation for the rule.
func readOverrides(environ []string, file map[string]any) *overrides {
	o := &overrides{tree: map[string]any{}, origin: map[string]string{}}
	for _, entry := range environ {
		variable, value, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(variable, envPrefix) {
			continue
		}
		rest := strings.ToLower(variable[len(envPrefix):])
		if !strings.Contains(rest, envSeparator) && schema.children[rest] == nil {
			continue // not an override: probably a secret for env:NAME
		}
		o.apply(variable, strings.Split(rest, envSeparator), value, file)
	}
	return o
}

// apply resolves the path segments of variable and records its value.
func (o *overrides) apply(variable string, segments []string, value string, file map[string]any) {
	problem := func(format string, args ...any) {
		o.problems = append(o.problems, fmt.Errorf("%s: %s", variable, fmt.Sprintf(format, args...)))
	}
	k, path := schema, ""
	fileBlock := file
	var keys []string
	for i := 0; i < len(segments); i++ {
		seg := segments[i]
		if seg == "" {
			problem("empty key between separators; separate keys with one %q", envSeparator)
			return
		}
		child := k.children[seg]
		if child == nil {
			problem("%v", unknownKey(path, seg, k.names()))
			return
		}
		last := i == len(segments)-1
		switch child.kind {
		case setting, list:
			if !last {
				problem("%s is a setting, so nothing can follow it", join(path, seg))
				return
			}
			path = join(path, seg)
			keys = append(keys, seg)
		case block:
			if last {
				problem("%s is a block; set one of its keys, as in %s%s%s", join(path, seg), variable, envSeparator, strings.ToUpper(child.names()[0]))
				return
			}
			path = join(path, seg)
			keys = append(keys, seg)
			fileBlock, _ = fileBlock[seg].(map[string]any)
		case namedBlock:
			if i+2 >= len(segments) {
				problem("%s needs a block name and a key, as in %s%sNAME%s%s", join(path, seg),
					variable, envSeparator, envSeparator, strings.ToUpper(child.names()[0]))
				return
			}
			blocks, _ := fileBlock[seg].(map[string]any)
			label, found, hint := matchLabel(segments[i+1], blocks)
			if !found {
				problem("no %s %q in the configuration file%s", join(path, seg), segments[i+1], hint)
				return
			}
			path = joinNamed(path, seg, label)
			keys = append(keys, seg, label)
			fileBlock, _ = blocks[label].(map[string]any)
			i++
		}
		k = child
	}
	if previous, dup := o.origin[path]; dup && previous != variable {
		problem("%s is also set by %s", path, previous)
		return
	}
	o.origin[path] = variable
	setNested(o.tree, keys, value)
}

// matchLabel finds the block in blocks named like the lowercased name from
// a variable: the exact name first, then the only name equal without regard
// to case. When none matches it returns a hint for the error message.
func matchLabel(name string, blocks map[string]any) (label string, found bool, hint string) {
	if _, ok := blocks[name]; ok {
		return name, true, ""
	}
	labels := make([]string, 0, len(blocks))
	var matches []string
	for l := range blocks {
		labels = append(labels, l)
		if strings.EqualFold(l, name) {
			matches = append(matches, l)
		}
	}
	slices.Sort(labels)
	slices.Sort(matches)
	switch len(matches) {
	case 1:
		return matches[0], true, ""
	case 0:
		if len(labels) == 0 {
			return "", false, " (it defines none)"
		}
		return "", false, suggest(name, labels)
	default:
		return "", false, fmt.Sprintf(" (ambiguous: %q)", matches)
	}
}

// setNested sets m[keys[0]][keys[1]]... to value, creating maps on the way.
func setNested(m map[string]any, keys []string, value string) {
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = value
}
