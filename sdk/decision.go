package sdk

// Decision is a filter's answer for one statement, built with Default,
// Writer, Replica, Cluster or Reject and refined with Rewrite, ForcePin and
// NeverPin. The zero Decision is Default. Building one does not allocate.
type Decision struct {
	route     uint8
	action    uint8
	pin       uint8
	cluster   string
	code      string
	text      string
	pinReason string
}

// Route kinds, actions and pin decisions of the ABI.
const (
	routeDefault = iota
	routeWriter
	routeReplica
	routeCluster
)

const (
	actionNone = iota
	actionReject
	actionRewrite
)

const (
	pinKeep = iota
	pinForce
	pinNever
)

// Default sends the statement where the listener would without a filter
// and keeps the classifier's pin decision.
func Default() Decision { return Decision{} }

// Writer sends the statement to the cluster's primary.
func Writer() Decision { return Decision{route: routeWriter} }

// Replica sends the statement to a healthy replica.
func Replica() Decision { return Decision{route: routeReplica} }

// Cluster sends the statement to the writer of the named cluster.
func Cluster(name string) Decision { return Decision{route: routeCluster, cluster: name} }

// Reject refuses the statement: the client gets an error with the given
// SQLSTATE (five characters of 0-9 and A-Z, not class 00) and message.
func Reject(sqlstate, message string) Decision {
	return Decision{action: actionReject, code: sqlstate, text: message}
}

// Rewrite returns d sending sql in place of the statement's text.
func (d Decision) Rewrite(sql string) Decision {
	d.action, d.code, d.text = actionRewrite, "", sql
	return d
}

// ForcePin returns d pinning the session to its server connection, with a
// reason shown in Sluice's /sessions and metrics.
func (d Decision) ForcePin(reason string) Decision {
	d.pin, d.pinReason = pinForce, reason
	return d
}

// NeverPin returns d not pinning the session for this statement, whatever
// the classifier says.
func (d Decision) NeverPin() Decision {
	d.pin, d.pinReason = pinNever, ""
	return d
}

// size returns the length of d's encoding.
func (d *Decision) size() int {
	return outputHeader + len(d.cluster) + len(d.code) + len(d.text) + len(d.pinReason)
}

// encode writes d into b, which holds d.size() bytes.
func (d *Decision) encode(b []byte) {
	b[0], b[1], b[2], b[3] = d.route, d.action, d.pin, 0
	putU32(b[4:], len(d.cluster))
	putU32(b[8:], len(d.code))
	putU32(b[12:], len(d.text))
	putU32(b[16:], len(d.pinReason))
	n := outputHeader
	n += copy(b[n:], d.cluster)
	n += copy(b[n:], d.code)
	n += copy(b[n:], d.text)
	copy(b[n:], d.pinReason)
}

func putU32(b []byte, v int) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func getU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
