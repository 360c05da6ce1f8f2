# Thin wrappers around the scripts; the scripts are what CI and the README use.
GO      ?= go
BIN     ?= bin/silo-proxy
CONFIG  ?= config.example.yaml
FUZZTIME ?= 60s

.PHONY: build test unit integration bench fuzz lint run clean

build:
	$(GO) build -o $(BIN) ./cmd/silo-proxy

# The whole suite, as CI runs it (integration tests need root).
test:
	bash scripts/test.sh

# Unit tests only: no root, no PostgreSQL needed.
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration:
	$(GO) test -count=1 -v ./integration/...

bench:
	bash bench/run.sh

# Every fuzz target for FUZZTIME each.
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

run:
	bash scripts/demo.sh

clean:
	rm -rf bin
