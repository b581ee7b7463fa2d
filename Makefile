# spotroot — see README.md. `make demo` and `make test` set up everything
# they need on a fresh Debian machine (apt packages, the cloud kernel).
GO      ?= go
BUILD   ?= build
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The PID 1 binary: static, no paths, no symbols.
GOFLAGS_BIN := -trimpath -ldflags='-s -w -X main.version=$(VERSION)'
TEST_TIMEOUT ?= 40m

.PHONY: all build setup demo test unit e2e lint bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BIN) -o $(BUILD)/spotroot ./cmd/spotroot
	@ls -l $(BUILD)/spotroot | awk '{printf "%s: %.2f MiB\n", $$9, $$5/1048576}'

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
# private namespaces, and the QEMU end-to-end scenarios.
test: setup lint
	CGO_ENABLED=0 $(GO) test -timeout $(TEST_TIMEOUT) ./...

unit: lint
	CGO_ENABLED=0 $(GO) test -short ./...

# Only the QEMU scenarios; one by one with e.g. RUN=first-boot.
e2e: setup
	CGO_ENABLED=0 $(GO) test -timeout $(TEST_TIMEOUT) -v ./e2e -run 'TestScenarios/$(RUN)'

clean:
	rm -rf $(BUILD)
