package session

import (
	"testing"

	"github.com/sluicedb/sluice/core/pool"
)

// The per-transaction benchmarks drive a machine through whole transactions
// as an engine does in transaction mode: the client's first message asks
// for a server connection, which is attached, the message is offered again,
// and the server's replies end with the connection going back. They report
// the machine's own cost per transaction, allocations included.

// benchMachine drives one client's machine for the benchmarks.
type benchMachine struct {
	b   *testing.B
	m   *Machine
	srv *pool.ServerState
}

func newBenchMachine(b *testing.B) *benchMachine {
	cfg := &Config{Mode: ModeTransaction, Track: map[string]bool{"search_path": true}, MaxPrepared: 10, MaxClientPrepared: 100}
	d := &benchMachine{b: b, m: New(cfg, Key{ProcessID: 7, SecretKey: 9}), srv: newServer()}
	d.m.Login(nil, defaults(), noCache{})
	return d
}

// client offers a client message until the machine takes it.
func (d *benchMachine) client(msg []byte) {
	for range 3 {
		st := d.m.Client(msg[0], len(msg)-5, msg[5:])
		if st.Need != NeedServer {
			if st.Need != NeedNothing || st.End {
				d.b.Fatalf("message %q: need %d, end %v", msg[0], st.Need, st.End)
			}
			return
		}
		d.m.Attach(d.srv)
	}
	d.b.Fatalf("message %q offered three times", msg[0])
}

// server hands the server's messages to the machine and reports whether the
// last one gave the connection back.
func (d *benchMachine) server(msgs [][]byte) bool {
	var st Step
	for _, msg := range msgs {
		st = d.m.Server(msg[0], len(msg)-5, msg[5:])
	}
	return st.Release == ReleaseReturn
}

// run runs b.N transactions of the client messages and server replies.
func (d *benchMachine) run(client, server [][]byte) {
	d.b.ReportAllocs()
	d.b.ResetTimer()
	for range d.b.N {
		for _, msg := range client {
			d.client(msg)
		}
		if !d.server(server) {
			d.b.Fatal("the connection was not given back")
		}
	}
}

// BenchmarkTransactionSimple is one pgbench -M simple statement.
func BenchmarkTransactionSimple(b *testing.B) {
	newBenchMachine(b).run(
		[][]byte{query("SELECT abalance FROM pgbench_accounts WHERE aid = 42;")},
		[][]byte{msg('T', int16(0)), msg('D', int16(0)), cc("SELECT 1"), rfq('I')})
}

// BenchmarkTransactionExtended is one pgbench -M extended statement: the
// unnamed statement parsed, bound and executed.
func BenchmarkTransactionExtended(b *testing.B) {
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	newBenchMachine(b).run(
		[][]byte{parse("", sql), bind("", "", "42"), msg('D', byte('P'), ""), execute(), syncMsg()},
		[][]byte{msg('1'), msg('2'), msg('T', int16(0)), msg('D', int16(0)), cc("SELECT 1"), rfq('I')})
}

// BenchmarkTransactionPrepared is one pgbench -M prepared statement: a
// named statement, prepared once, bound and executed.
func BenchmarkTransactionPrepared(b *testing.B) {
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	d := newBenchMachine(b)
	for _, m := range [][]byte{parse("P0_1", sql), syncMsg()} {
		d.client(m)
	}
	if !d.server([][]byte{msg('1'), rfq('I')}) {
		b.Fatal("the connection was not given back after the Parse")
	}
	d.run(
		[][]byte{bind("", "P0_1", "42"), msg('D', byte('P'), ""), execute(), syncMsg()},
		[][]byte{msg('2'), msg('T', int16(0)), msg('D', int16(0)), cc("SELECT 1"), rfq('I')})
}

// BenchmarkTransactionBlock is a transaction block of three simple queries.
func BenchmarkTransactionBlock(b *testing.B) {
	d := newBenchMachine(b)
	stmts := []struct {
		sql, tag string
		status   byte
	}{
		{"BEGIN", "BEGIN", 'T'},
		{"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 42", "UPDATE 1", 'T'},
		{"COMMIT", "COMMIT", 'I'},
	}
	type exchange struct {
		query   []byte
		replies [][]byte
	}
	exchanges := make([]exchange, len(stmts))
	for i, s := range stmts {
		exchanges[i] = exchange{query(s.sql), [][]byte{cc(s.tag), rfq(s.status)}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var returned bool
		for _, e := range exchanges {
			d.client(e.query)
			returned = d.server(e.replies)
		}
		if !returned {
			b.Fatal("the connection was not given back")
		}
	}
}
