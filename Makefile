# haven — see README.md. Every target installs or builds what it needs.
GO       ?= go
PKGS     ?= ./...
TESTFLAGS ?=

.PHONY: all build package test test-short lint demo bench-lb bench-vip bench-pg bench-dr bench-dns bench-backup bench-galera bench-volume prereqs fuzz clean

all: build

build:
	$(GO) build -o bin/haven ./cmd/haven

# The whole suite, as CI runs it: lint, then unit, integration (real
# processes on loopback) and the seed corpus of every fuzz target (go test
# runs a FuzzXxx as a test of its seeds), with the race detector.
# internal/vip runs alone, after the rest: its namespace tests assert that no
# probe goes unanswered under packet loss, and on a 2-core machine the other
# packages' -race tests running beside it starve its renewals of CPU.
# internal/drill's web drills follow it, alone too, for the same reason: a
# holder starved past its lease lets the address go before the drill's
# fault can hit it (CI with three packages side by side).
#
# The slowest packages are named first: go test starts packages in the
# order given, and a long one started last makes the whole run wait for it
# alone. Three at a time (TEST_P), not one per core: the two slowest
# (cmd/haven, the keeper: 1,287 s and 1,085 s of tests one after another
# on 2026-12-07, run beside each other alone) take most of the run, and
# with two at a time every other package waited for one of them to end (CI
# at 26 minutes). Their longest tests two at a time (t.Parallel) was tried
# and reverted: on two cores the labs are CPU-bound, the load went to 18,
# both packages took longer and four tests timed out.
#
# The tests' files (data directories, repositories, etcd members) live in
# memory, TEST_TMPDIR on /dev/shm: the suite builds and links race-detector
# binaries beside the tests, and on a machine with one shared disk that
# writeback held every fsync (PostgreSQL's checkpoints and shutdowns, a
# base backup's files, etcd's log) for seconds, so that primaries lost
# their leases in tests about something else (testenv.MemoryDir says the
# same of etcd). go's own build files stay on disk (GOTMPDIR). Tests of a
# full disk mount a small tmpfs of their own; benches run on disk.
SLOW_PKGS = ./internal/pg/keeper ./cmd/haven ./internal/backup/base ./internal/backup/expire ./internal/backup/wal ./internal/agent
TEST_TMPDIR ?= $(shell [ -d /dev/shm ] && echo /dev/shm/haven-test || echo /tmp/haven-test)
TEST_ENV = TMPDIR=$(TEST_TMPDIR) GOTMPDIR=/var/tmp
TEST_P ?= 3
# The whole output is also kept in TEST_LOG; scripts/gotest.sh ends a
# failed run with its failures in short.
TEST_LOG = $(TEST_TMPDIR)/go-test.log
test: prereqs lint
	mkdir -p $(TEST_TMPDIR) && chmod 1777 $(TEST_TMPDIR) && : > $(TEST_LOG)
	$(TEST_ENV) bash scripts/gotest.sh $(TEST_LOG) $(GO) test -race -count=1 -p $(TEST_P) -timeout 45m $(TESTFLAGS) $(SLOW_PKGS) $$($(GO) list $(PKGS) | grep -v -e '/internal/vip$$' -e '/internal/drill$$' $(foreach p,$(SLOW_PKGS),-e '$(patsubst ./%,/%,$(p))$$'))
	$(TEST_ENV) bash scripts/gotest.sh $(TEST_LOG) $(GO) test -race -count=1 -p 1 -timeout 25m $(TESTFLAGS) ./internal/vip ./internal/drill

# Fast unit tests only.
test-short:
	$(GO) test -short -count=1 $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# The demo, after installing what its acts in namespaces need (as root).
demo:
	bash scripts/prereqs.sh demo
	$(GO) run ./cmd/haven demo

bench-lb:
	$(GO) run ./bench/lb $(BENCHFLAGS)

bench-vip:
	$(GO) run ./bench/vip $(BENCHFLAGS)

bench-pg:
	$(GO) run ./bench/pg $(BENCHFLAGS)

bench-dr:
	$(GO) run ./bench/dr $(BENCHFLAGS)

bench-dns:
	$(GO) run ./bench/dns $(BENCHFLAGS)

bench-backup:
	$(GO) run ./bench/backup $(BENCHFLAGS)

bench-galera:
	$(GO) run ./bench/galera $(BENCHFLAGS)

bench-volume:
	$(GO) run ./bench/volume $(BENCHFLAGS)

# Run each fuzz target, every func FuzzXxx in a _test.go file, for a while
# (FUZZTIME=30s by default).
FUZZTIME ?= 30s
fuzz:
	@git ls-files '*_test.go' | xargs grep -H '^func Fuzz' | \
	sed -E 's#^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*).*#\1 \2#' | \
	while read -r dir fn; do \
		echo "$(GO) test ./$$dir -run '^$$' -fuzz '^$$fn$$' -fuzztime $(FUZZTIME)"; \
		$(GO) test ./$$dir -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# The .deb (deploy/nfpm.yaml), into dist/: the binary as it ships (static,
# no paths of this machine in it), its systemd unit, /etc/haven/haven.yaml
# and /var/lib/haven. nfpm comes from the Go module proxy when it is not on
# PATH. docs/install.md says what the package holds and how to install it.
NFPM_VERSION ?= v2.48.0
NFPM ?= $(shell command -v nfpm || echo $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION))
GOARCH ?= $(shell $(GO) env GOARCH)
HAVEN_VERSION ?= 0.1.0~git$(shell git log -1 --format=%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0)
package:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(HAVEN_VERSION)" -o bin/haven ./cmd/haven
	GOARCH= $(GO) run ./cmd/haven completion bash > bin/haven.bash
	mkdir -p dist
	GOARCH=$(GOARCH) HAVEN_VERSION=$(HAVEN_VERSION) $(NFPM) package --config deploy/nfpm.yaml --packager deb --target dist/

prereqs:
	bash scripts/prereqs.sh

clean:
	rm -rf bin dist
