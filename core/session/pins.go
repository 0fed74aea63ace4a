package session

import (
	"math/bits"
	"sort"

	"github.com/sluicedb/sluice/core/sqlclass"
)

// pinSet is a set of reasons a session keeps its server connection: bit r
// stands for sqlclass.Reason r; the bits above hold Sluice's own reasons.
type pinSet uint32

// Sluice's own pin reasons, beyond the classifier's.
const (
	pinUntrackedSet pinSet = 1 << (20 + iota)
	pinSessionMode
	pinPolicy
)

// ReasonUntrackedSet is the text of the pin reason for a session-level SET
// or RESET of a parameter Sluice does not track (or of any parameter when
// pinning.on_set is "pin").
const ReasonUntrackedSet = "SET of an untracked parameter"

func reasonBit(r sqlclass.Reason) pinSet { return 1 << uint(r) }

// texts returns the reasons in p as sorted texts; policy is the text of
// pinPolicy.
func (p pinSet) texts(policy string) []string {
	if p == 0 {
		return nil
	}
	var out []string
	for p != 0 {
		b := pinSet(1) << uint(bits.TrailingZeros32(uint32(p)))
		p &^= b
		out = append(out, b.text(policy))
	}
	sort.Strings(out)
	return out
}

func (b pinSet) text(policy string) string {
	switch b {
	case pinUntrackedSet:
		return ReasonUntrackedSet
	case pinSessionMode:
		return "session pooling mode"
	case pinPolicy:
		return policy
	}
	return sqlclass.Reason(bits.TrailingZeros32(uint32(b))).String()
}
