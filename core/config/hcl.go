package config

import (
	"errors"
	"fmt"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/token"
	koanfhcl "github.com/knadh/koanf/parsers/hcl"
)

// checkSyntax parses src and reports, with line and column, what the map
// that HCL decodes to can no longer show: syntax errors, keys set twice,
// repeated blocks and block names, and blocks with the wrong number of
// names. The file is called name in the messages.
func checkSyntax(name string, src []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: cannot parse: %v", name, r)
		}
	}()
	f, err := hcl.ParseBytes(src)
	if err != nil {
		return syntaxError(name, err)
	}
	list, ok := f.Node.(*ast.ObjectList)
	if !ok {
		return fmt.Errorf("%s: expected a list of blocks and settings", name)
	}
	c := syntaxChecker{file: name}
	c.list(schema, "", list)
	return errors.Join(c.problems...)
}

// syntaxError formats an error of the HCL parser as file:line:column.
func syntaxError(name string, err error) error {
	var pe *hclparser.PosError
	if errors.As(err, &pe) && pe.Pos.Line > 0 {
		return fmt.Errorf("%s:%d:%d: %v", name, pe.Pos.Line, pe.Pos.Column, pe.Err)
	}
	return fmt.Errorf("%s: %v", name, err)
}

// syntaxChecker walks the HCL syntax tree of a file along the schema.
type syntaxChecker struct {
	file     string
	problems []error
}

// errorf records a problem at pos.
func (c *syntaxChecker) errorf(pos token.Pos, format string, args ...any) {
	c.problems = append(c.problems,
		fmt.Errorf("%s:%d:%d: %s", c.file, pos.Line, pos.Column, fmt.Sprintf(format, args...)))
}

// list checks the items of the block at path, described by k. Unknown keys
// and values of the wrong shape are left to normalize, which can suggest
// the right key.
func (c *syntaxChecker) list(k *key, path string, list *ast.ObjectList) {
	seen := map[string]token.Pos{}
	once := func(display string, pos token.Pos) bool {
		if first, dup := seen[display]; dup {
			c.errorf(pos, "%s: defined more than once (first at line %d)", display, first.Line)
			return false
		}
		seen[display] = pos
		return true
	}
	for _, item := range list.Items {
		if item == nil || len(item.Keys) == 0 {
			continue
		}
		name, ok := keyName(item.Keys[0])
		if !ok {
			continue
		}
		child := k.children[name]
		if child == nil {
			continue
		}
		pos := item.Keys[0].Pos()
		display := join(path, name)
		obj, isObject := item.Val.(*ast.ObjectType)
		switch child.kind {
		case setting:
			if len(item.Keys) > 1 {
				c.errorf(pos, "%s: is a setting, not a block; write %s = value", display, name)
				continue
			}
			once(display, pos)
		case block:
			if len(item.Keys) > 1 {
				c.errorf(pos, "%s: a %s block takes no name; write %s { ... }", display, name, name)
				continue
			}
			if isObject && once(display, pos) && obj.List != nil {
				c.list(child, display, obj.List)
			}
		case namedBlock:
			if len(item.Keys) != 2 {
				c.errorf(pos, "%s: a %s block needs exactly one name, as in %s \"main\" { ... }", display, name, name)
				continue
			}
			label, ok := keyName(item.Keys[1])
			if !ok {
				c.errorf(item.Keys[1].Pos(), "%s: the block name must be a string", display)
				continue
			}
			display = joinNamed(path, name, label)
			if !isObject {
				c.errorf(pos, "%s: must be a block { ... }", display)
				continue
			}
			if once(display, pos) && obj.List != nil {
				c.list(child, display, obj.List)
			}
		}
	}
}

// keyName returns the name an object key decodes to.
func keyName(k *ast.ObjectKey) (name string, ok bool) {
	if k == nil {
		return "", false
	}
	defer func() {
		if recover() != nil {
			name, ok = "", false
		}
	}()
	name, ok = k.Token.Value().(string)
	return name, ok
}

// decodeHCL decodes src into nested maps with koanf's HCL parser. Blocks
// come back as lists of maps: listen "a" {...} listen "b" {...} is
// {"listen": [{"a": [{...}]}, {"b": [{...}]}]}.
func decodeHCL(name string, src []byte) (m map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%s: cannot decode: %v", name, r)
		}
	}()
	m, err = koanfhcl.Parser(false).Unmarshal(src)
	if err != nil {
		return nil, syntaxError(name, err)
	}
	return m, nil
}

// document is a decoded file reshaped along the schema: blocks are maps,
// named blocks are maps from name to block.
type document struct {
	tree        map[string]any
	listenOrder []string
	filterOrder []string
	problems    []error
}

// normalize reshapes the decoded file and reports unknown keys and values
// of the wrong shape.
func normalize(decoded map[string]any) *document {
	d := &document{}
	d.tree = d.body(schema, "", decoded)
	return d
}

// problemf records a problem.
func (d *document) problemf(format string, args ...any) {
	d.problems = append(d.problems, fmt.Errorf(format, args...))
}

// body reshapes the contents of the block at path, described by k.
func (d *document) body(k *key, path string, m map[string]any) map[string]any {
	out := map[string]any{}
	for _, name := range sortedNames(m) {
		v := m[name]
		child := k.children[name]
		display := join(path, name)
		if child == nil {
			d.problems = append(d.problems, unknownKey(path, name, k.names()))
			continue
		}
		switch child.kind {
		case setting:
			switch v.(type) {
			case string, bool, int, int64, float64:
				out[name] = v
			case []map[string]any, map[string]any:
				d.problemf("%s: must be a value, not a block", display)
			default:
				d.problemf("%s: must be a single value, not a list", display)
			}
		case list:
			switch v := v.(type) {
			case string:
				out[name] = v
			case []any:
				for _, e := range v {
					if _, ok := e.(string); !ok {
						d.problemf("%s: must be a list of quoted strings", display)
						break
					}
				}
				out[name] = v
			default:
				d.problemf("%s: must be a list of quoted strings", display)
			}
		case block:
			bodies, ok := blockBodies(v)
			if !ok {
				d.problemf("%s: must be a block { ... }", display)
				continue
			}
			if len(bodies) > 1 {
				d.problemf("%s: defined more than once", display)
			}
			merged := map[string]any{}
			for _, b := range bodies {
				for bk, bv := range d.body(child, display, b) {
					merged[bk] = bv
				}
			}
			out[name] = merged
		case namedBlock:
			out[name] = d.named(child, path, name, v)
		case freeform:
			bodies, ok := blockBodies(v)
			if !ok || len(bodies) != 1 {
				d.problemf("%s: must be one block { ... }", display)
				continue
			}
			out[name] = plain(bodies[0])
		}
	}
	return out
}

// plain turns a decoded free-form block into nested maps, lists and
// values: HCL's lists of blocks become maps (the last wins), as JSON
// objects.
func plain(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = plain(e)
		}
		return out
	case []map[string]any:
		out := map[string]any{}
		for _, m := range v {
			for k, e := range m {
				out[k] = plain(e)
			}
		}
		return out
	case []any:
		if bodies, ok := blockBodies(v); ok {
			return plain(bodies)
		}
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// named reshapes the named blocks called name inside the block at path.
func (d *document) named(k *key, path, name string, v any) map[string]any {
	out := map[string]any{}
	entries, ok := blockBodies(v)
	if !ok {
		d.problemf("%s: must be a block, as in %s \"main\" { ... }", join(path, name), name)
		return out
	}
	for _, entry := range entries {
		for _, label := range sortedNames(entry) {
			display := joinNamed(path, name, label)
			bodies, ok := blockBodies(entry[label])
			if !ok || len(bodies) != 1 {
				d.problemf("%s: must be one block { ... }", display)
				continue
			}
			if _, dup := out[label]; dup {
				d.problemf("%s: defined more than once", display)
				continue
			}
			out[label] = d.body(k, display, bodies[0])
			if path == "" && name == "listen" {
				d.listenOrder = append(d.listenOrder, label)
			}
			if path == "" && name == "filter" {
				d.filterOrder = append(d.filterOrder, label)
			}
		}
	}
	return out
}

// blockBodies returns the maps that a decoded block value holds.
func blockBodies(v any) ([]map[string]any, bool) {
	switch v := v.(type) {
	case []map[string]any:
		return v, true
	case map[string]any:
		return []map[string]any{v}, true
	case []any:
		bodies := make([]map[string]any, 0, len(v))
		for _, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			bodies = append(bodies, m)
		}
		return bodies, len(bodies) > 0
	}
	return nil, false
}
