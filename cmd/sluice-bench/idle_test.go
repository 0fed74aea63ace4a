package main

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicedb/sluice/core/config"
)

func TestMD5Password(t *testing.T) {
	// "md5" + md5(md5("benchpw" + "bench") in hex + salt) in hex, computed
	// with Python's hashlib.
	if got, want := md5Password("bench", "benchpw", [4]byte{1, 2, 3, 4}), "md50c53c829fadd9b7ffeba4bcd597c6fc4"; got != want {
		t.Errorf("md5Password = %q, want %q", got, want)
	}
}

// fakeBackend serves one client on conn: md5 authentication of the bench
// user with salt 1 2 3 4, then queries answered with one row "1". With
// badPassword it rejects the password.
func fakeBackend(t *testing.T, conn net.Conn, badPassword bool) {
	defer conn.Close()
	be := pgproto3.NewBackend(conn, conn)
	startup, err := be.ReceiveStartupMessage()
	if err != nil {
		t.Errorf("backend: %v", err)
		return
	}
	if sm, ok := startup.(*pgproto3.StartupMessage); !ok || sm.Parameters["user"] != benchUser || sm.Parameters["database"] != benchDatabase {
		t.Errorf("backend: startup %#v", startup)
		return
	}
	be.Send(&pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}})
	be.Flush()
	be.SetAuthType(pgproto3.AuthTypeMD5Password)
	msg, err := be.Receive()
	if err != nil {
		t.Errorf("backend: %v", err)
		return
	}
	if pw, ok := msg.(*pgproto3.PasswordMessage); !ok || pw.Password != md5Password(benchUser, benchPassword, [4]byte{1, 2, 3, 4}) || badPassword {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "bench"`})
		be.Flush()
		return
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.18"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 2}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	be.Flush()
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			if m.String != "SELECT 1" {
				t.Errorf("backend: query %q", m.String)
			}
			be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("?column?"), DataTypeOID: 23, DataTypeSize: 4}}})
			be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			be.Flush()
		case *pgproto3.Terminate:
			return
		}
	}
}

// listenFake serves fakeBackend on a loopback port.
func listenFake(t *testing.T, badPassword bool) string {
	return serveLoopback(t, func(c net.Conn) { fakeBackend(t, c, badPassword) })
}

// serveLoopback listens on a loopback port until the test ends and runs
// serve on a goroutine for each connection; it returns the address.
func serveLoopback(t *testing.T, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func TestOpenIdleClients(t *testing.T) {
	addr := listenFake(t, false)
	conns, failed, firstErr := openIdleClients(context.Background(), addr, 50, 8, nil)
	if len(conns) != 50 || failed != 0 || firstErr != nil {
		t.Fatalf("%d connected, %d failed (%v); want 50 and none", len(conns), failed, firstErr)
	}
	for _, c := range conns {
		closeIdleClient(c)
	}

	bad := listenFake(t, true)
	conns, failed, firstErr = openIdleClients(context.Background(), bad, 5, 2, nil)
	if len(conns) != 0 || failed != 5 || firstErr == nil || !strings.Contains(firstErr.Error(), "logging in: FATAL 28P01: password authentication failed") {
		t.Errorf("with a rejected password: %d connected, %d failed, first error %v", len(conns), failed, firstErr)
	}
}

func TestLoginAndSelectTimesOut(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go func() { // read the startup message and say nothing
		buf := make([]byte, 1024)
		server.Read(buf)
	}()
	err := loginAndSelect(client, time.Now().Add(100*time.Millisecond))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v, want a timeout", err)
	}
}

func TestIdleReport(t *testing.T) {
	b := reportBench(targetDirect, targetPgBouncer, targetSluice, targetSluiceGoroutine)
	b.opts.idle = 10000
	b.idle = []idleResult{
		{target: targetPgBouncer, clients: 10000, connected: 10000, connectTime: 4200 * time.Millisecond,
			rssBefore: 8 * 1024, rssIdle: 8*1024 + 20000, peakIdle: 30 * 1024, fdsBefore: 25, fdsIdle: 10025, fdsClosed: 25},
		{target: targetSluice, clients: 10000, connected: 9990, failed: 10, firstErr: errors.New("dial tcp: connection refused"),
			rssBefore: 20 * 1024, rssIdle: 20*1024 + 39960, peakIdle: 70 * 1024, fdsBefore: 30, fdsIdle: 10020, fdsClosed: 31,
			heapBefore: 1 << 20, heapIdle: 1<<20 + 9990*2560, afterClose: "SELECT 1 through it failed: boom"},
		{target: targetSluiceGoroutine, clients: 10000, err: errors.New("reading its memory: no such process")},
	}
	if per, ok := b.idle[0].perClientKiB(); !ok || per != 2 {
		t.Errorf("perClientKiB = %v, %v; want 2", per, ok)
	}
	report := b.markdown()
	for _, want := range []string{
		"| target | connected | failed | connect s | RSS before MiB | RSS idle MiB | peak RSS MiB | KiB per idle client | heap KiB per idle client | open files before / idle / after |",
		"| pgbouncer | 10000 of 10000 | 0 | 4.2 | 8.0 | 27.5 | 30.0 | 2.00 | - | 25 / 10025 / 25 |",
		"| sluice | 9990 of 10000 | 10 | 0.0 | 20.0 | 59.0 | 70.0 | 4.00 | 2.50 | 30 / 10020 / 31 |",
		"| sluice-goroutine | 0 | 0 | - | - | - | - | failed | - | - |",
		"sluice: **10 of 10000 clients failed**; the first error: dial tcp: connection refused",
		"sluice after the clients had gone: SELECT 1 through it failed: boom",
		"sluice-goroutine: not measured: reading its memory: no such process",
		"answered `SELECT 1`: pgbouncer.",
		"PgBouncer's max_client_conn is 10200 for this; Sluice's configuration has no client limit.",
		"| RSS ≤ 4 KiB per idle plaintext client | 10,000 idle clients | 4.00 KiB met (10 of 10000 failed to connect) | not measured |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}

func TestPgBouncerClientLimit(t *testing.T) {
	if ini := (pgbouncerSetup{}).pgbouncerINI(); !strings.Contains(ini, "\nmax_client_conn = 2000\n") {
		t.Errorf("default max_client_conn missing:\n%s", ini)
	}
	if ini := (pgbouncerSetup{maxClientConn: 10200}).pgbouncerINI(); !strings.Contains(ini, "\nmax_client_conn = 10200\n") {
		t.Errorf("max_client_conn 10200 missing:\n%s", ini)
	}
}

func TestParseHeapAlloc(t *testing.T) {
	profile := "heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 123\n# TotalAlloc = 456\n# HeapAlloc = 789\n# HeapSys = 1000\n"
	if v, err := parseHeapAlloc(profile); v != 789 || err != nil {
		t.Fatalf("parseHeapAlloc = %d, %v; want 789", v, err)
	}
	if _, err := parseHeapAlloc("# Alloc = 1\n"); err == nil {
		t.Fatal("a profile without HeapAlloc parsed")
	}
}

// A Sluice target with an admin port serves its profiles there.
func TestSluiceAdminPort(t *testing.T) {
	s := sluiceSetup{port: 7000, pgAddr: "127.0.0.1:5000", poolSize: 20, engine: config.EngineLoop, adminPort: 7001}
	cfg, err := config.Parse([]byte(s.configHCL()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.configHCL())
	}
	if cfg.Admin.Address != "127.0.0.1:7001" || !cfg.Admin.Pprof || cfg.Engine != config.EngineLoop {
		t.Fatalf("admin %+v, engine %q", cfg.Admin, cfg.Engine)
	}
}

func TestIdleReportTLS(t *testing.T) {
	b := reportBench(targetPgBouncer, targetSluice, targetPgBouncerTLS, targetSluiceTLS)
	b.opts.idle = 10000
	b.idle = []idleResult{
		{target: targetPgBouncer, clients: 10000, connected: 10000, rssBefore: 8 * 1024, rssIdle: 8*1024 + 20000},
		{target: targetSluice, clients: 10000, connected: 10000, rssBefore: 20 * 1024, rssIdle: 20*1024 + 40000},
		{target: targetPgBouncerTLS, clients: 10000, connected: 10000, connectTime: 3 * time.Second,
			rssBefore: 8 * 1024, rssIdle: 8*1024 + 300000, peakIdle: 400 * 1024, fdsBefore: 25, fdsIdle: 10025, fdsClosed: 25,
			tls: "TLS 1.3, TLS_AES_128_GCM_SHA256"},
		{target: targetSluiceTLS, clients: 10000, connected: 10000, connectTime: 5 * time.Second,
			rssBefore: 20 * 1024, rssIdle: 20*1024 + 600000, peakIdle: 700 * 1024, fdsBefore: 30, fdsIdle: 10030, fdsClosed: 30,
			heapBefore: 1 << 20, heapIdle: 1<<20 + 10000*40*1024, tls: "TLS 1.3, TLS_AES_128_GCM_SHA256"},
	}
	report := b.markdown()
	for _, want := range []string{
		"(md5 login as the bench user, 200 at a time; no TLS, except that to pgbouncer-tls and sluice-tls each client first sends an SSLRequest",
		"| pgbouncer-tls | 10000 of 10000 | 0 | 3.0 | 8.0 | 301.0 | 400.0 | 30.00 | - | 25 / 10025 / 25 |",
		"| sluice-tls | 10000 of 10000 | 0 | 5.0 | 20.0 | 605.9 | 700.0 | 60.00 | 40.00 | 30 / 10030 / 30 |",
		"The idle TLS clients negotiated: pgbouncer-tls TLS 1.3, TLS_AES_128_GCM_SHA256; sluice-tls TLS 1.3, TLS_AES_128_GCM_SHA256.",
		"| RSS ≤ 24 KiB per idle TLS client | 10,000 idle TLS clients (sluice-tls) | 60.00 KiB **NOT met** |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	// Plaintext clients only: no word of TLS in the idle section.
	b.idle = b.idle[:2]
	if report := b.markdown(); strings.Contains(report, "except that to pgbouncer-tls") || strings.Contains(report, "idle TLS clients negotiated") {
		t.Errorf("an idle section without TLS clients describes them:\n%s", report)
	}
}

func TestIdleTargets(t *testing.T) {
	want := []string{targetPgBouncer, targetSluice, targetSluiceGoroutine, targetPgBouncerTLS, targetSluiceTLS}
	if !slices.Equal(idleTargets, want) {
		t.Errorf("idleTargets = %q, want %q", idleTargets, want)
	}
	// The syscall stage keeps to the plaintext proxies.
	if slices.Contains(syscallTargets, targetSluiceTLS) {
		t.Errorf("syscallTargets = %q", syscallTargets)
	}
}
