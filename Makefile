# Sluice: `make run` starts a local PostgreSQL primary and replica and Sluice
# in front of them (`make run-consul`: with Consul as the source of truth);
# `make test` runs every test against real PostgreSQL servers.

GO      ?= go
PGBIN   ?= /usr/lib/postgresql/15/bin
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_TIMEOUT ?= 15m
CONSUL_MOD := discovery/consul/agent

.PHONY: all deps build test run run-consul bench bench-failover lint fuzz clean

all: build

# deps installs what is missing (PostgreSQL 15 server and client, PgBouncer,
# the JDBC driver) from Debian's packages and node-postgres from npm for the
# driver tests, and builds the Consul agent bin/consul; it is a fast no-op
# when everything is present.
deps: $(BIN)/consul
	@if [ -x $(PGBIN)/initdb ] && command -v psql >/dev/null && command -v pgbench >/dev/null && \
	   { command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; }; then :; else \
	  echo "installing postgresql-15 and pgbouncer"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-15 postgresql-client-15 pgbouncer >/dev/null; \
	fi
	@[ -f /usr/share/java/postgresql.jar ] && command -v javac >/dev/null && command -v npm >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    libpostgresql-jdbc-java $$(command -v javac >/dev/null || echo default-jdk-headless) \
	    $$(command -v npm >/dev/null || echo npm) >/dev/null; }
	@[ -d core/proxy/testdata/node/node_modules/pg ] || (cd core/proxy/testdata/node && npm ci --no-audit --no-fund --silent)
	@$(GO) mod download

# bin/consul is the Consul agent that discovery/consultest starts: v1.14.11, the
# last MPL-2.0 release, built from source (Go module proxy) in the tools module
# $(CONSUL_MOD); about 4 minutes once, rebuilt only when missing or older than
# that module's go.mod. The touch keeps it newer when go build leaves it as is.
$(BIN)/consul: $(CONSUL_MOD)/go.mod
	@echo "building $@ (Consul v1.14.11 from source; a few minutes the first time)"
	@cd $(CONSUL_MOD) && $(GO) build -o $(CURDIR)/$@ github.com/hashicorp/consul
	@touch $@

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/sluice ./cmd/sluice

# test runs everything under the race detector with the default (loop)
# engine; then the integration tests of core/proxy twice side by side: under
# the goroutine engine (the TestLoop ones choose the loop engine themselves)
# and with every client the tests open over TLS (SLUICE_TEST_CLIENT_TLS=1;
# TestLoopTenThousandClients, whose clients are raw plaintext ones, only
# in the race pass); then short fuzz runs. The two core/proxy runs mostly
# wait for PostgreSQL: side by side on two cores they take about as long as
# the longer one alone (6 minutes, against 11.7 one after the other). Each
# one's output is printed when both have ended, and the target fails if
# either fails. The fuzz runs are counted in executions (about 10 s each
# here), not in time: a -fuzztime duration can end in a spurious "context
# deadline exceeded" failure on a loaded machine (golang/go#75804, fixed in
# Go 1.27).
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	out=$$(mktemp -d) || exit 1; \
	SLUICE_ENGINE=goroutine $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -skip '^TestLoop' ./core/proxy >$$out/goroutine 2>&1 & g=$$!; \
	SLUICE_TEST_CLIENT_TLS=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -skip '^TestLoopTenThousandClients$$' ./core/proxy >$$out/tls 2>&1 & s=$$!; \
	wait $$g; grc=$$?; wait $$s; src=$$?; \
	echo "== core/proxy, goroutine engine: exit $$grc"; cat $$out/goroutine; \
	echo "== core/proxy, TLS clients: exit $$src"; cat $$out/tls; \
	rm -rf $$out; [ $$grc = 0 ] && [ $$src = 0 ]
	$(GO) test -run '^$$' -fuzz FuzzReadStartup -fuzztime 500000x ./core/wire
	$(GO) test -run '^$$' -fuzz FuzzClassify -fuzztime 150000x ./core/sqlclass
	$(GO) test -run '^$$' -fuzz FuzzMachine -fuzztime 100000x ./core/session

run: deps build
	$(GO) run ./cmd/sluice-dev -sluice $(BIN)/sluice -config proxy.hcl -data .sluice

run-consul: deps build
	$(GO) run ./cmd/sluice-dev -sluice $(BIN)/sluice -config examples/proxy-consul.hcl -data .sluice -consul

# bench writes BENCHMARKS.latest.md: pgbench -S directly, through PgBouncer
# and through Sluice with each engine (sluice: engine = "loop";
# sluice-goroutine: engine = "goroutine"), with the issue 9 targets
# evaluated; -reader adds Sluice's reader endpoint over two replicas;
# -filter adds a Sluice with the readwrite example filter on the statement
# hook (TPS against plain Sluice) and runs the hook-cost Go benchmark (go
# test -bench BenchmarkStatement ./filters: median and p99 of one hook
# call); -tls adds PgBouncer and Sluice with a TLS listener (pgbouncer-tls,
# sluice-tls: pgbench with sslmode=require, -M simple only; a TLS pairing's
# CPU per transaction next to a plaintext one and to PgBouncer's TLS);
# -syscalls counts PgBouncer's and both Sluices' system calls per
# transaction with strace -c -f -p (needs root and strace); -idle 10000
# measures their resident memory per idle client with 10,000 idle clients
# (TLS clients for the TLS targets).
bench: deps
	$(GO) run ./cmd/sluice-bench -modes simple,prepared,extended -reader -filter -tls -syscalls -idle 10000 -out BENCHMARKS.latest.md
	$(GO) test -run '^$$' -bench . -benchmem ./core/sqlclass

# bench-failover runs failover under load five times per promotion mode and
# writes BENCHMARKS.failover.md (a few minutes).
bench-failover: deps
	$(GO) run ./cmd/sluice-bench failover -runs 5 -modes discovery,probe -out BENCHMARKS.failover.md

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
