# kube-git-deploy — developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

# No Google library may ever probe the cloud metadata address, locally or in CI.
export GCE_METADATA_HOST := 127.0.0.1:1
export CLOUDSDK_CORE_CHECK_GCE_METADATA := false

BIN        := $(CURDIR)/.bin
EMULATORS  := $(BIN)/emulators
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m
FUZZTIME   ?= 30s

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(EMULATORS): $(shell find shared/emulator -name '*.go' -not -name '*_test.go') go.mod
	go build -o $@ ./shared/emulator/cmd/emulators

.PHONY: k8s-bin
k8s-bin: ## build the local Kubernetes control plane into ~/.cache/kgd/k8s-bin (once; ~9 min cold)
	./tools/k8s/build.sh >/dev/null

.PHONY: test
test: vet k8s-bin $(EMULATORS) ## run every test: emulators, Docker Engine, local Kubernetes control plane
	$(EMULATORS) -quiet -- go test $(GO_TEST_FLAGS) ./...

.PHONY: vet
vet:
	go vet ./...

# Local defaults for `make run`; any of them can be overridden from the
# environment. The encryption key is random per run: data lives only as long
# as the emulators do.
run: export GOOGLE_CLOUD_PROJECT ?= demo-local
run: export PUBLIC_HTTP_HOST ?= http://localhost:$(or $(PUBLIC_HTTP_PORT),5001)
run: export GITHUB_CLIENT_ID ?= local-dev-client
run: export GITHUB_CLIENT_SECRET ?= local-dev-secret
run: export KGD_ENCRYPTION_KEY ?= $(shell head -c 32 /dev/urandom | base64)

.PHONY: run
run: $(EMULATORS) ## run the local stack: emulators, PrivateAPI on 5000, PublicAPI on 5001
	go build -o $(BIN)/functions ./functions/cmd/functions
	$(EMULATORS) -- $(BIN)/functions

.PHONY: terraform-check
terraform-check: ## terraform fmt, validate and test (mocked provider), all offline
	./terraform/check.sh

.PHONY: functions-bundle
functions-bundle: ## write the Cloud Functions source bundle to dist/functions.zip
	go run ./functions/cmd/bundle -o dist/functions.zip

.PHONY: proto
proto: ## regenerate the Go, gRPC, gateway and OpenAPI code from proto/
	./proto/generate.sh

.PHONY: proto-check
proto-check: proto ## fail if the committed generated code differs from a fresh generation
	@git diff --exit-code --stat -- proto/ || { echo "proto: generated code is stale: run 'make proto' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto/)" || { git status --porcelain -- proto/; echo "proto: untracked generated files" >&2; exit 1; }

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	go vet ./...
	cd tools && go build -o $(BIN)/ honnef.co/go/tools/cmd/staticcheck
	$(BIN)/staticcheck ./...

.PHONY: bench
bench: $(EMULATORS) ## run the benchmarks on the emulators and record them in BENCHMARKS.txt
	$(EMULATORS) -quiet -- go test -run '^$$' -bench . -benchmem -count=1 ./... | tee bench.txt.tmp
	{ echo "# make bench, $$(date -u +%Y-%m-%dT%H:%MZ), $$(nproc) cores, $$(go version | cut -d' ' -f3)"; grep -E '^(Benchmark|goos|goarch|cpu|pkg)' bench.txt.tmp; } > BENCHMARKS.txt
	rm -f bench.txt.tmp

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done
