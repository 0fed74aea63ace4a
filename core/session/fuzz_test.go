package session

import (
	"encoding/binary"
	"testing"

	"github.com/sluicedb/sluice/core/wire"
)

// FuzzMachine drives a machine with random message sequences from both
// sides, borrows that succeed or fail, and clients that leave. The machine
// must never panic, never write to a server it does not hold, frame every
// message it writes correctly, and never send the client a message the
// client did not earn: a ReadyForQuery only for a Sync, Query or
// FunctionCall it answers itself, and from the server's side nothing but
// the ParseComplete it owes for a Parse.
func FuzzMachine(f *testing.F) {
	f.Add([]byte("QaPbBcEdSe1f2gCZ"), false)
	f.Add([]byte("PbSe1Z!QaGdcCZ"), true)
	f.Add([]byte("Qa EZ Pb Pb S 1 E Z"), false)
	f.Add([]byte("QLISTEN x\x00ZAQ"), true)
	f.Fuzz(func(t *testing.T, data []byte, session bool) {
		mode := ModeTransaction
		if session {
			mode = ModeSession
		}
		cfg := &Config{Mode: mode, Track: map[string]bool{"search_path": true}, MaxPrepared: 2, MaxClientPrepared: 2, RecordLSN: true}
		m := New(cfg, Key{ProcessID: 1, SecretKey: 2})
		// Half the inputs run with decisions deferred to the engine, as
		// the event loop runs a filter chain, under a policy that
		// rewrites and refuses.
		deferred := len(data)%2 == 1
		if deferred {
			m.SetPolicy(fuzzPolicy{})
			m.DeferDecisions(true)
		}
		st := m.Login(nil, defaults(), noCache{})
		if st.Need == NeedServer {
			checkStep(t, m, m.Attach(newServer()), true, 0)
		}
		texts := []string{"SELECT 1", "BEGIN", "COMMIT", "SET search_path = a", "LISTEN x", "DEALLOCATE s1",
			"DISCARD ALL", "RESET ALL", "SELECT pg_advisory_lock(1)", "PREPARE p AS SELECT 1", "COPY t FROM STDIN",
			"INSERT INTO t VALUES (1)", "SET sluice.min_lsn = '0/1'", "SHOW sluice.last_lsn", "SET sluice.min_lsn = 'x'", "ROLLBACK"}
		names := []string{"", "s1", "s2", "s3"}
		for i := 0; i < len(data); i++ {
			b := data[i]
			pick := func() byte {
				i++
				if i < len(data) {
					return data[i]
				}
				return 0
			}
			var mb []byte
			client := true
			switch b % 24 {
			case 0:
				mb = query(texts[int(pick())%len(texts)])
			case 1:
				mb = parse(names[int(pick())%len(names)], texts[int(pick())%len(texts)])
			case 2:
				mb = bind("", names[int(pick())%len(names)], "1")
			case 3:
				mb = msg('D', byte('S'), names[int(pick())%len(names)])
			case 4:
				mb = msg('C', byte('S'), names[int(pick())%len(names)])
			case 5:
				mb = execute()
			case 6:
				mb = syncMsg()
			case 7:
				mb = msg('H')
			case 8:
				mb = msg('d', []byte("x"))
			case 9:
				mb = msg('c')
			case 10:
				mb = msg('F', int32(1))
			case 11:
				client = false
				mb = rfq("ITE"[int(pick())%3])
			case 12:
				client = false
				mb = msg('1')
			case 13:
				client = false
				mb = msg('2')
			case 14:
				client = false
				mb = msg('3')
			case 15:
				client = false
				mb = errResp("42000", "boom")
			case 16:
				client = false
				mb = cc([]string{"SELECT 1", "COMMIT", "ROLLBACK"}[int(pick())%3])
			case 17:
				client = false
				mb = msg('G', byte(0), int16(0))
			case 18:
				client = false
				mb = msg('S', "search_path", "b")
			case 19:
				client = false
				mb = msg('D', int16(1), int32(1), []byte("v"))
			case 20:
				client = false
				mb = msg('A', int32(1), "x", "")
			case 21:
				st := m.ClientGone()
				checkStep(t, m, st, m.Holding() || st.Release != Keep, 0)
				return
			case 22:
				mb = msg(pick(), []byte("junk"))
			default:
				client = false
				mb = msg('T', int16(0))
			}
			n := len(mb) - 5
			if !client {
				held := m.Holding()
				st := m.Server(mb[0], n, mb[5:])
				checkStep(t, m, st, held, len(mb))
				if !held && (len(st.ToClient) > 0 || st.Skip != len(mb)) {
					t.Fatalf("a message from a server the machine does not hold reached the client")
				}
				for _, typ := range msgTypes(t, st.ToClient) {
					if typ != '1' && typ != 'E' {
						t.Fatalf("server step synthesised %q for the client", typ)
					}
				}
				if st.End {
					return
				}
				continue
			}
			body := mb[5 : 5+min(m.ClientNeeds(mb[0], n), n)]
			asked := false
			for round := 0; ; round++ {
				held := m.Holding()
				st := m.Client(mb[0], n, body)
				// Each NeedReplies round answers at least one owed reply
				// (with a ReadyForQuery), so a message may come back once
				// per reply still owed before it (a pipeline the server
				// holds back until a Sync: several); a machine that never
				// takes it still fails here.
				if round > 16 {
					t.Fatalf("message %q offered %d times", mb[0], round)
				}
				switch st.Need {
				case NeedDecision:
					// Once per message: the decision is kept for the
					// offers that follow (after its borrow, too).
					if !deferred || asked {
						t.Fatalf("NeedDecision for %q (deferred %v, asked already %v)", mb[0], deferred, asked)
					}
					if len(st.ToServer) > 0 || len(st.ToClient) > 0 || st.Skip != 0 || st.End || st.Release != Keep {
						t.Fatalf("NeedDecision for %q came with a step to carry out: %+v", mb[0], st)
					}
					m.AskPolicy()
					asked = true
					continue
				case NeedServer:
					if pick()%5 == 0 {
						st = m.Refuse(mb[0], n, wire.Errorf(wire.CodeTooManyConnections, "no connection"))
					} else {
						checkStep(t, m, m.Attach(newServer()), true, 0)
						continue
					}
				case NeedReplies:
					// Answer what is owed (Sluice's own exchange, the
					// client's earlier requests) and try again.
					// Each client message so far owes at most one
					// ReadyForQuery, and Sluice's own exchanges a few.
					for k := 0; m.Holding() && (k == 0 || m.Expect() == ExpectReplies); k++ {
						if k > i+8 {
							t.Fatalf("replies still owed after %d ReadyForQuery", k)
						}
						checkStep(t, m, m.Server('Z', 1, []byte{'I'}), true, 6)
					}
					continue
				}
				checkStep(t, m, st, held || m.Holding(), len(mb))
				for _, typ := range msgTypes(t, st.ToClient) {
					if typ == 'Z' && mb[0] != 'S' && mb[0] != 'Q' && mb[0] != 'F' {
						t.Fatalf("ReadyForQuery synthesised for a %q", mb[0])
					}
				}
				if st.End {
					return
				}
				break
			}
		}
	})
}

// checkStep checks what holds for every step.
func checkStep(t *testing.T, m *Machine, st Step, held bool, total int) {
	t.Helper()
	if len(st.ToServer) > 0 && !held {
		t.Fatalf("wrote %q to a server the machine did not hold", msgTypes(t, st.ToServer))
	}
	if total > 0 && st.Need == NeedNothing && !st.End && (st.Skip < 0 || st.Skip > total) {
		t.Fatalf("skip %d of a %d-byte message", st.Skip, total)
	}
	msgTypes(t, st.ToServer)
	msgTypes(t, st.ToClient)
}

// msgTypes returns the types of the messages in b, failing on bad framing.
func msgTypes(t *testing.T, b []byte) []byte {
	t.Helper()
	var out []byte
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("truncated message header %q", b)
		}
		n := int(binary.BigEndian.Uint32(b[1:]))
		if n < 4 || 1+n > len(b) {
			// A rewritten Bind's head announces the client's bytes after it.
			if b[0] == 'B' {
				return append(out, 'B')
			}
			t.Fatalf("message %q claims %d bytes, %d present", b[0], n, len(b)-1)
		}
		out = append(out, b[0])
		b = b[1+n:]
	}
	return out
}

// fuzzPolicy rewrites one statement and refuses another, so that deferred
// decisions are carried out in every shape.
type fuzzPolicy struct{}

func (fuzzPolicy) Decide(st *Statement) Decision {
	switch st.SQL {
	case "SELECT 1":
		return Decision{Rewrite: "SELECT 2"}
	case "SELECT pg_advisory_lock(1)":
		return Decision{Reject: wire.Errorf(wire.CodeFeatureNotSupported, "refused by policy")}
	case "INSERT INTO t VALUES (1)":
		return Decision{Pin: PinForce, PinReason: "pinned by the fuzz policy"}
	}
	return Decision{}
}
