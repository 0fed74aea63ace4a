package pool

import (
	"container/list"
	"strconv"
)

// Prepared is the LRU set of protocol-level prepared statements Sluice
// created on one server connection on behalf of its clients, keyed by the
// statement's query and parameter types so that clients share them. Its
// owner (the session holding the connection) serialises access.
type Prepared struct {
	byKey map[string]*list.Element
	lru   list.List // of *preparedEntry, most recently used at the front
	next  uint64
}

type preparedEntry struct{ key, name string }

// NoopName is a statement name Sluice never prepares: closing it is a
// harmless request that the server answers with CloseComplete.
const NoopName = "sluice_noop"

// Lookup returns the server-side name of the statement with key and marks
// it recently used.
func (p *Prepared) Lookup(key string) (string, bool) {
	if p.byKey == nil {
		return "", false
	}
	e, ok := p.byKey[key]
	if !ok {
		return "", false
	}
	p.lru.MoveToFront(e)
	return e.Value.(*preparedEntry).name, true
}

// Add records a new statement with key and returns its server-side name,
// and the names of the least recently used statements to close so that at
// most limit remain.
func (p *Prepared) Add(key string, limit int) (name string, evict []string) {
	if p.byKey == nil {
		p.byKey = make(map[string]*list.Element)
	}
	p.next++
	name = "sluice_" + strconv.FormatUint(p.next, 10)
	p.byKey[key] = p.lru.PushFront(&preparedEntry{key: key, name: name})
	for p.lru.Len() > limit {
		e := p.lru.Back()
		pe := e.Value.(*preparedEntry)
		p.lru.Remove(e)
		delete(p.byKey, pe.key)
		evict = append(evict, pe.name)
	}
	return name, evict
}

// Remove forgets the statement with key, which the server does not have
// (its Parse failed or was skipped after an error).
func (p *Prepared) Remove(key string) {
	if e, ok := p.byKey[key]; ok {
		p.lru.Remove(e)
		delete(p.byKey, key)
	}
}

// Clear forgets every statement, after DISCARD ALL or DEALLOCATE ALL.
func (p *Prepared) Clear() {
	p.byKey = nil
	p.lru.Init()
}

// Len returns the number of statements.
func (p *Prepared) Len() int { return p.lru.Len() }
