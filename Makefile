# spotroot — see README.md. `make demo` and `make test` set up everything
# they need on a fresh Debian machine (apt packages, the cloud kernel).
GO      ?= go
BUILD   ?= build
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The PID 1 binary: static, no paths, no symbols, and -tags pid1, which
# leaves out the AWS SDK's default credential chain that only the operator
# commands run from a workstation need (README: "Two builds");
# nethttpomithttp2 drops net/http's HTTP/2 (EC2's Query API is HTTP/1.1) and
# everything outside the standard library is compiled without inlining (the
# last -gcflags pattern a package matches wins): the 10 MiB budget (README:
# "Where the PID 1 binary's bytes go"; e2e/images.PID1BuildArgs).
GOFLAGS_BIN := -trimpath -ldflags='-s -w -X main.version=$(VERSION)'
PID1_TAGS   := -tags pid1,nethttpomithttp2 -gcflags=all=-l -gcflags=std=
TEST_TIMEOUT ?= 70m

.PHONY: size-report all build build-ops initramfs deb lintian release setup demo test unit e2e e2e-distro e2e-arm64 lint bench bench-floor soak crash-soak clean

# The hostile simulator's seed (README: "The hostile cloud"): empty = a
# random one, printed on failure; SEED=N replays it.
SEED ?=
export SPOTROOT_SEED := $(SEED)

all: build

build:
	CGO_ENABLED=0 $(GO) build $(PID1_TAGS) $(GOFLAGS_BIN) -o $(BUILD)/spotroot ./cmd/spotroot
	@ls -l $(BUILD)/spotroot | awk '{printf "%s: %.2f MiB (PID 1 build)\n", $$9, $$5/1048576}'

# Where the PID 1 binary's bytes go: its size (with and without the
# compiled-in CA roots) against the 10 MiB budget and the largest packages,
# beside SIZE_BASE (a git revision; empty = none). Fails over budget.
SIZE_BASE ?=
size-report:
	$(GO) run ./e2e/cmd/sizereport $(if $(SIZE_BASE),-base $(SIZE_BASE))

# The operator build: every command, with the SDK's default credential chain.
build-ops:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BIN) -o $(BUILD)/spotroot-ops ./cmd/spotroot
	@ls -l $(BUILD)/spotroot-ops | awk '{printf "%s: %.2f MiB (operator build)\n", $$9, $$5/1048576}'

setup:
	@./e2e/setup.sh

# The main job: a simulated Spot instance boots onto its persistent volume,
# is terminated, and a replacement boots onto the same volume.
demo: setup
	$(GO) run ./e2e/cmd/demo

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...

# Everything: unit tests, privileged mount/pivot tests on loop devices in
# private namespaces, and the QEMU end-to-end scenarios. -count=1: the e2e
# tests build spotroot at run time, which Go's test cache cannot see.
# SPOTROOT_KMOD_TREE: the cloud kernel's depmod tree, for internal/kmod's
# checks of a real index (binary tries against text, virtio load order).
# CI=1: setup has installed every tool and fetched the kernel, so a test that
# finds one missing fails instead of skipping (internal/testenv).
test: setup lint
	@mkdir -p $(BUILD); CI=1 CGO_ENABLED=0 $(GO) test -count=1 -run '^TestChaos$$' -v ./internal/boot >$(BUILD)/chaos.log 2>&1 \
		|| { cat $(BUILD)/chaos.log; exit 1; }; grep '^chaos:' $(BUILD)/chaos.log
	SPOTROOT_KMOD_TREE=$$($(GO) run ./e2e/cmd/cloudkernel -arch amd64) && export SPOTROOT_KMOD_TREE && \
		CI=1 CGO_ENABLED=0 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

unit: lint
	CGO_ENABLED=0 $(GO) test -short ./...

# Only the QEMU scenarios; one by one with e.g. RUN=first-boot.
e2e: setup
	CGO_ENABLED=0 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./e2e -run '/$(RUN)'

# The claim flows (pool race, create, other AZ, attached to a dead owner)
# against the hostile simulator without QEMU, SEEDS seeds each from SEED:
# wrong outcomes and double attaches (both must be 0), calls per claim.
SEEDS ?= 50
FLOWS ?= pool,create,other-az,dead
soak:
	$(GO) run ./e2e/soak -seeds $(SEEDS) -flows $(FLOWS) $(if $(SEED),-seed $(SEED))
	$(MAKE) crash-soak

# The slower tier: Debian (systemd, cloud-init) built from Debian's packages
# with mmdebstrap (cached in ~/.cache/spotroot/distro) on the persistent
# volume; one by one with e.g. RUN=systemd-root.
e2e-distro: setup
	$(GO) vet -tags e2e_distro ./e2e/distro
	CGO_ENABLED=0 $(GO) test -count=1 -tags e2e_distro -timeout $(TEST_TIMEOUT) -v ./e2e/distro -run 'TestDistro/$(RUN)'

# The arm64 (Graviton) tier: Debian's arm64 cloud kernel in
# qemu-system-aarch64 (TCG, virt machine, Neoverse-N1) with the arm64 PID 1
# build; first-boot, replacement, initramfs-root, attached-to-terminated.
# One by one with e.g. RUN=first-boot.
e2e-arm64: setup
	$(GO) vet -tags e2e_arm64 ./e2e
	CGO_ENABLED=0 $(GO) test -count=1 -tags e2e_arm64 -timeout $(TEST_TIMEOUT) -v ./e2e -run 'TestArm64/$(RUN)'

# Boot cost in QEMU, side by side (5 runs each, min/median/max): spotroot as
# PID 1 (AttachVolume latency 0 and 2s), the floor (the image's own init) and
# the two-boot flow; binary size, peak RSS; the pool race (10/100/1000) on the
# simulator. Table on stdout, CSV in $(BUILD)/bench/bench.csv.
BENCH_ARGS ?=
bench: setup
	CGO_ENABLED=0 $(GO) run ./e2e/bench -out $(BUILD)/bench $(BENCH_ARGS)

# The handoff's floor on the bench guest (README "The handoff's floor"):
# e2e/bench/skeleton, the bare library calls of a handoff and nothing else,
# booted as "this build" in pairs with spotroot at attach 0 s, both counted
# in translated instructions. Its goal lines are the skeleton's. ≈ 8 min.
FLOOR_ARGS ?= -runs 10 -translations 2
bench-floor: setup build
	CGO_ENABLED=0 $(GO) build $(PID1_TAGS) $(GOFLAGS_BIN) -o $(BUILD)/skeleton/spotroot ./e2e/bench/skeleton
	CGO_ENABLED=0 $(GO) run ./e2e/bench -out $(BUILD)/bench-floor -pool "" -profile kind -only spotroot \
		-spotroot $(BUILD)/skeleton/spotroot -against $(BUILD)/spotroot $(FLOOR_ARGS)

# spotroot's initramfs: spotroot as /init plus the NIC, disk and filesystem
# modules of a kernel. INITRAMFS_KERNEL: lib/modules/<release>, a root holding
# it, or a kernel .deb; empty = the running kernel, else the e2e cloud kernel.
# ARCH=arm64 (Graviton) builds the arm64 spotroot and, without
# INITRAMFS_KERNEL, takes Debian's arm64 cloud kernel: build/initramfs-arm64.img.
ARCH             ?= $(shell $(GO) env GOARCH)
INITRAMFS_KERNEL ?=
INITRAMFS_ARGS   ?=
HOSTARCH         := $(shell $(GO) env GOARCH)
INITRAMFS_OUT    ?= $(if $(filter $(ARCH),$(HOSTARCH)),$(BUILD)/initramfs.img,$(BUILD)/initramfs-$(ARCH).img)
initramfs: build
	@spot=$(BUILD)/spotroot; \
	if [ "$(ARCH)" != "$(HOSTARCH)" ]; then spot=$(BUILD)/spotroot-$(ARCH); \
		CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build $(PID1_TAGS) $(GOFLAGS_BIN) -o $$spot ./cmd/spotroot || exit 1; fi; \
	k='$(INITRAMFS_KERNEL)'; \
	if [ -z "$$k" ] && { [ "$(ARCH)" != "$(HOSTARCH)" ] || [ ! -f "/lib/modules/$$(uname -r)/modules.order" ]; }; then \
		k=$$($(GO) run ./e2e/cmd/cloudkernel -arch $(ARCH)) || exit 1; fi; \
	echo "initramfs: $$spot, kernel $${k:-running}"; \
	CGO_ENABLED=0 $(GO) run ./initramfs/cmd/spotroot-initramfs -spotroot $$spot -arch $(ARCH) \
		-kernel "$$k" -o $(INITRAMFS_OUT) $(INITRAMFS_ARGS)

# The Debian package (dpkg-deb; reproducible with SOURCE_DATE_EPOCH).
DEB_ARCH    ?= amd64
DEB_VERSION ?= $(shell git log -1 --format='0.1.0~git%cd.%h' --date=format:%Y%m%d 2>/dev/null || echo 0.1.0)
deb:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(DEB_ARCH) $(GO) build $(PID1_TAGS) $(GOFLAGS_BIN) -o $(BUILD)/deb/spotroot-$(DEB_ARCH) ./cmd/spotroot
	CGO_ENABLED=0 GOOS=linux GOARCH=$(DEB_ARCH) $(GO) build $(GOFLAGS_BIN) -o $(BUILD)/deb/spotroot-initramfs-$(DEB_ARCH) ./initramfs/cmd/spotroot-initramfs
	SPOTROOT_INITRAMFS_BIN=$(BUILD)/deb/spotroot-initramfs-$(DEB_ARCH) \
		./packaging/deb/build.sh $(BUILD)/deb/spotroot-$(DEB_ARCH) $(DEB_ARCH) '$(DEB_VERSION)' $(BUILD)

# Every tag lintian --pedantic finds is an error or justified in
# packaging/deb/lintian-overrides.
lintian: deb
	lintian --pedantic --fail-on error,warning,info,pedantic $(BUILD)/spotroot_$(DEB_VERSION)_$(DEB_ARCH).deb

# Static release binaries with checksums: the PID 1 build (for images) and
# the operator build (for workstations), for amd64 and arm64.
release:
	rm -rf $(BUILD)/release && mkdir -p $(BUILD)/release
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build $(PID1_TAGS) $(GOFLAGS_BIN) -o $(BUILD)/release/spotroot-linux-$$arch ./cmd/spotroot || exit 1; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build $(GOFLAGS_BIN) -o $(BUILD)/release/spotroot-ops-linux-$$arch ./cmd/spotroot || exit 1; \
	done
	cd $(BUILD)/release && sha256sum spotroot-linux-* spotroot-ops-linux-* > SHA256SUMS && cat SHA256SUMS && ls -l

clean:
	rm -rf $(BUILD)

# The simulator-level crash matrix (e2e/crash_test.go) over CRASH_SEEDS
# seeds from SEED (else a random one): every step of the claim,
# detach-wait, create, move and pool flows cut before and after EC2
# commits it, under the default hostile profile. `make test` runs one
# seed; `make soak` runs this. One seed ~50 s, 20 seeds ~4 min on 2 cores.
CRASH_SEEDS ?= 20
crash-soak:
	@mkdir -p $(BUILD); SPOTROOT_CRASH_SEEDS=$(CRASH_SEEDS) CGO_ENABLED=0 $(GO) test -count=1 -timeout 60m \
		-run '^TestCrashMatrix$$' -v ./e2e >$(BUILD)/crash-soak.log 2>&1 \
		|| { grep -Ev '^ *(=== |--- PASS)' $(BUILD)/crash-soak.log; exit 1; }; grep 'crash matrix:' $(BUILD)/crash-soak.log
