# updog — run `make help` for the targets.
GO       ?= go
BIN      := bin
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/updog/updog/internal/version.V=$(VERSION)
CMDS     := $(notdir $(wildcard cmd/*))
FUZZTIME ?= 30s
VM_ARTIFACTS ?= $(CURDIR)/$(BIN)/vmtest

.DEFAULT_GOAL := help
.PHONY: help build test check-hostile test-slow test-vm fleet bench fuzz demo lint tools clean

help: ## show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

build: ## build every command into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

tools: ## install the external tools the tests compare against (as root, Debian)
	@scripts/install-deps.sh

test: tools check-hostile ## install what is needed, then run every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m -skip '^TestHostile' ./...

check-hostile: ## the hostile-user scenarios: FIFOs, signals, concurrency, stalled servers, overflow
	$(GO) test -race -count=1 -timeout 30m -run '^TestHostile' ./...

test-slow: tools ## the slow tier (CI runs it after make test): the 256 MiB, 200-interruption install campaign, the delta proof and the fleet test
	UPDOG_CAMPAIGN=full $(GO) test -count=1 -v -run '^TestCampaign$$' ./updater
	$(GO) test -count=1 -tags updog_failpoints ./internal/failpoint
	UPDOG_CAMPAIGN=full $(GO) test -count=1 -v -run '^TestCampaignProcess$$' ./updater
	$(GO) test -count=1 -v -run '^TestDeltaProof$$' ./updater
	$(GO) test -count=1 -v -run '^TestHostileFleet' ./internal/fleettest

test-vm: ## the VM tier (CI runs it after make test): QEMU boots the images, updog updates, falls back and rolls back; consoles kept in VM_ARTIFACTS
	@scripts/install-deps.sh --vm
	@start=$$(date +%s); \
	UPDOG_VM=1 UPDOG_VM_ARTIFACTS=$(VM_ARTIFACTS) $(GO) test -count=1 -v -timeout 40m -run '^TestVM' ./vmtest; rc=$$?; \
	echo "== test-vm took $$(( $$(date +%s) - start )) s; consoles and protocol logs in $(VM_ARTIFACTS)"; exit $$rc

fleet: tools ## the fleet tests: 20 hosts, updog-lockd with 2 slots on a real etcd, kills and a paused etcd
	$(GO) test -race -count=1 -v -run '^TestHostileFleet' ./internal/fleettest

bench: tools build ## run the benchmarks (each prints its ratio against its reference)
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./...
	@scripts/bench.sh

fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

demo: build ## build two releases, publish them, and update, reboot, mark good and roll back a disk image with updog
	@scripts/demo.sh

lint: ## gofmt, go vet, staticcheck
	@test -z "$$(gofmt -s -l $$(git ls-files '*.go'))" || { gofmt -s -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	GOFLAGS=-mod=mod $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean: ## remove build and demo output
	rm -rf $(BIN) demo
