# SPDX-License-Identifier: Apache-2.0
# nstrace: build, test and run.

# sudo's PATH often lacks Go's directory: fall back to where it installs.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# The BPF objects are committed; regenerating them needs exactly this clang
# so that `make check-generated` compares like with like.
CLANG ?= clang-14
BPF_CFLAGS ?= -O2 -g -Wall -Werror
BIN := nstrace
# What --version and the metrics' build info say.
VERSION ?= $(shell git describe --always --dirty --tags 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty)
LDFLAGS := -X github.com/nstrace/nstrace/internal/version.Version=$(VERSION) -X github.com/nstrace/nstrace/internal/version.Commit=$(COMMIT)
GENERATED := 'internal/probe/nstrace_bpf*' 
ARGS ?= -e exec

export BPF2GO_CC := $(CLANG)
export BPF2GO_CFLAGS := $(BPF_CFLAGS)

.PHONY: all build man install generate check-generated test-deps otelcol test test-unit test-kernels fuzz bench soak image kubeconform run clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/nstrace

# The man page, from the same flag definitions as --help.
man: build
	./$(BIN) --man > $(BIN).1

# The binary and its man page, under $(DESTDIR)$(PREFIX).
PREFIX ?= /usr/local
install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/$(BIN)
	install -D -m 0644 $(BIN).1 $(DESTDIR)$(PREFIX)/share/man/man1/$(BIN).1

generate:
	$(GO) generate ./internal/probe

# Regenerate the BPF objects and fail if they differ from the committed ones.
check-generated: generate
	@if [ -n "$$(git status --porcelain --untracked-files=all -- $(GENERATED))" ]; then \
		echo "generated BPF objects differ from the committed ones (run make generate and commit):"; \
		git status --porcelain --untracked-files=all -- $(GENERATED); \
		exit 1; \
	fi
	@echo "generated BPF objects match bpf/ sources"

# Tools the privileged tests run; as root, missing ones are installed.
# The container tests drive runc, containerd (ctr), Docker and Podman,
# starting containerd and dockerd themselves when none runs; the pod tests
# drive containerd's CRI with crictl (built once into bin/) and the CNI
# plugins; Graphviz's dot renders nstrace ns --dot; a Prometheus server
# scrapes nstrace and an OpenTelemetry Collector (make otelcol) reads its
# pod log.
TEST_TOOLS := runc busybox ip unshare nsenter lsns setpriv taskset promtool prometheus containerd ctr dockerd docker podman /usr/lib/cni/bridge dot groff
TEST_PKGS := runc busybox-static iproute2 util-linux prometheus containerd docker.io podman containernetworking-plugins graphviz groff-base
# The release the tests check for, from the file they embed.
CRICTL_VERSION := $(shell cat internal/testutil/crictl-version)

test-deps:
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		echo "installing what the tests run:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_PKGS) >/dev/null; \
	fi
	@if [ "$$(id -u)" = 0 ] && [ "$$(bin/crictl --version 2>/dev/null)" != "crictl version $(CRICTL_VERSION)" ]; then \
		echo "installing crictl $(CRICTL_VERSION) in bin/"; \
		GOBIN="$(CURDIR)/bin" CGO_ENABLED=0 $(GO) install -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRICTL_VERSION)" \
			sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION); \
	fi
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory otelcol; fi

# The OpenTelemetry Collector of deploy/kubernetes/otelcol/builder.yaml,
# built from the Go module proxy by the OpenTelemetry Collector Builder,
# once, into bin/otelcol/HASH (about 2 minutes and 1 GB of memory).
otelcol:
	@PATH="$$PATH:$(dir $(GO))" deploy/kubernetes/otelcol/build >/dev/null

# All tests. As root this includes the privileged suite, which loads the
# real BPF programs; it never silently skips there. A package's tests
# may take longer than go test's 10 minutes: deploy's build the image and
# run containerds, a Docker daemon and the collector.
test: test-deps
	@if [ "$$(id -u)" = 0 ]; then export NSTRACE_PRIVILEGED_TESTS=1; fi; \
	$(GO) test -count=1 -timeout 30m ./...

# Tests that need no privileges.
test-unit:
	$(GO) test -count=1 ./...

# Overhead, completeness, startup, memory and event rate, then the cost
# per event (BPF ns per run, tracer CPU and syscalls, idle ticks, dd),
# beside forkstat and bpftrace when installed (apt-get install forkstat
# bpftrace strace); as root. BENCH_ARGS=-quick for a shorter run.
bench: build
	$(GO) test -run XXX -bench . -benchmem ./internal/probe ./internal/output
	CGO_ENABLED=0 $(GO) build -o bin/execstorm ./cmd/execstorm
	CGO_ENABLED=0 $(GO) build -o bin/nstrace-bench ./cmd/nstrace-bench
	./bin/nstrace-bench -nstrace ./$(BIN) -storm ./bin/execstorm $(BENCH_ARGS)

# Ten minutes of runc container churn, exec storms, netns churn and log
# rotation under nstrace: RSS and fds at the end within 10% of where they
# were after the first minute; as root. Not part of make test.
SOAK_ARGS ?= -d 10m
soak: build
	CGO_ENABLED=0 $(GO) build -o bin/nstrace-soak ./cmd/nstrace-soak
	./bin/nstrace-soak -nstrace ./$(BIN) $(SOAK_ARGS)

# The privileged suite on the host (with what make test-deps installs)
# and, under qemu, on each guest of cmd/nstrace-vmtest/kernels.txt
# (Debian's 5.10, 6.1, 6.12 on x86_64, 6.1 on arm64, and 5.10 with cgroup
# v1 alone); as root, with qemu-system-x86, qemu-system-arm and
# busybox-static installed.
test-kernels: test-deps
	CGO_ENABLED=0 $(GO) build -o bin/nstrace-vmtest ./cmd/nstrace-vmtest
	./bin/nstrace-vmtest $(VMTEST_ARGS)

# The image: the static binary FROM scratch, built offline, then saved to
# $(IMAGE_TAR) for nodes to load (docker load, ctr -n k8s.io images import).
# A reachable Docker daemon is used; without one, deploy/image/with-docker
# starts a private one for the build and stops it (WITH_DOCKER="... --private"
# always does). IMAGE_DIR is the build context.
IMAGE ?= nstrace:$(VERSION)
IMAGE_TAR ?= bin/nstrace-image.tar
IMAGE_DIR ?= bin/image
WITH_DOCKER ?= deploy/image/with-docker
image: build
	mkdir -p $(IMAGE_DIR)
	cp $(BIN) $(IMAGE_DIR)/nstrace
	DOCKER_BUILDKIT=0 $(WITH_DOCKER) sh -c '\
		docker build -q -t $(IMAGE) -t nstrace:latest -f deploy/image/Dockerfile $(IMAGE_DIR) && \
		docker save -o $(IMAGE_TAR) $(IMAGE) nstrace:latest'
	@echo "image $(IMAGE), saved to $(IMAGE_TAR)"

# kubeconform, strict and offline, on deploy/kubernetes (schemas made from
# the k8s.io/kubernetes module's OpenAPI document).
kubeconform:
	PATH="$$PATH:$(dir $(GO))" deploy/kubernetes/validate

fuzz:
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime 30s ./internal/probe
	$(GO) test -run XXX -fuzz FuzzJSONAlwaysValid -fuzztime 30s ./internal/output

run: build
	./$(BIN) $(ARGS)

clean:
	rm -rf $(BIN) $(BIN).1 bin
