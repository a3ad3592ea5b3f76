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
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(EMULATORS): $(shell find shared/emulator -name '*.go' -not -name '*_test.go') go.mod
	go build -o $@ ./shared/emulator/cmd/emulators

.PHONY: k8s-bin
k8s-bin: ## build the local Kubernetes control plane into ~/.cache/kgd/k8s-bin (once; ~9 min cold)
	./tools/k8s/build.sh >/dev/null

.PHONY: test
test: vet k8s-bin $(EMULATORS) ## run every test: emulators, Docker Engine, local Kubernetes control plane
	$(EMULATORS) -quiet -- go test $(GO_TEST_FLAGS) ./...

# Cloud Build (cloudbuild.yaml) runs the tests that need no Docker Engine
# reachable on the step's loopback and no host networking: its engine runs
# on the worker host, outside the step's network. CI runs everything.
CLOUDBUILD_SKIP := /runner/internal/(build|pipeline|worker)$$|/localstack(/faults)?$$|/terraform/runner$$

.PHONY: test-cloudbuild
test-cloudbuild: vet k8s-bin $(EMULATORS) ## the tests Cloud Build can run (no Docker Engine on loopback)
	$(EMULATORS) -quiet -- go test $(GO_TEST_FLAGS) $$(go list ./... | grep -vE '$(CLOUDBUILD_SKIP)')

.PHONY: vet
vet:
	go vet ./...

# The whole system locally, in the foreground (localstack/cmd/localstack):
# emulators, functions, runner, API, registry, Kubernetes control plane and
# the GitHub stand-in, on loopback. Its defaults (project demo-local, a
# random KGD_ENCRYPTION_KEY per run, placeholder GitHub OAuth credentials,
# the ports) are in localstack.LoadConfig; any can be overridden from the
# environment (README lists them). Go's build cache makes the builds take
# seconds after the first time.
LOCAL_BINARIES := ./functions/cmd/functions ./runner ./api ./localstack/cmd/localstack ./kgd

.PHONY: run
# With KUBECONFIG set the stack deploys there and needs no control plane.
run: run-note $(if $(KUBECONFIG),,k8s-bin) ## run the whole system locally in the foreground; Ctrl-C stops it
	@test -x $(BIN)/runner || echo "make run: building the binaries into .bin/ (the first time takes a few minutes)"
	go build -o $(BIN)/ $(LOCAL_BINARIES)
	$(BIN)/localstack

.PHONY: run-note
run-note:
	@test -n "$(KUBECONFIG)" || test -x "$${KGD_K8S_BIN:-$$HOME/.cache/kgd/k8s-bin}/kube-apiserver" || \
	  echo "make run: building the local Kubernetes control plane once (about 9 minutes; later runs take seconds)"

.PHONY: demo
demo: ## with make run going: push a sample app through it and follow the job
	go build -o $(BIN)/ ./localstack/cmd/demo
	$(BIN)/demo

.PHONY: terraform-check
terraform-check: ## terraform fmt, validate and test (mocked provider), all offline
	./terraform/check.sh

# The service images (api/Dockerfile, runner/Dockerfile): FROM scratch
# with a static binary compiled here, so they build without pulling a base
# image — the same way here and on Cloud Build (docs/images.md).
IMAGES     := api runner
IMAGE_REPO ?= kgd
IMAGE_TAG  ?= dev

.PHONY: image-contexts
image-contexts: ## stage the images' build contexts in .bin/images (static binaries + CA certificates)
	./tools/images/stage.sh $(IMAGES)

.PHONY: images
images: image-contexts $(EMULATORS) ## build the API and runner images with the local Docker Engine and health-check each
	@for i in $(IMAGES); do echo "docker build $(IMAGE_REPO)/$$i:$(IMAGE_TAG)"; \
	  docker build -q -f $$i/Dockerfile -t $(IMAGE_REPO)/$$i:$(IMAGE_TAG) .bin/images/$$i >/dev/null || exit 1; done
	go build -o $(BIN)/ ./localstack/cmd/imagecheck
	$(EMULATORS) -quiet -- $(BIN)/imagecheck -repo $(IMAGE_REPO) -tag $(IMAGE_TAG)

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
# Every figure of bench/RESULTS.md (bench/doc.go): fixed sample counts
# after a warm-up, loopback only, each step bounded (about 10-15 minutes
# in all on 2 cores). Raw go test output and samples stay in a temp dir.
bench: k8s-bin $(EMULATORS) ## run the benchmarks on the emulators, the Docker Engine and the local control plane; write bench/RESULTS.md
	$(EMULATORS) -quiet -- go run ./bench/cmd/kgdbench -out bench/RESULTS.md

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done
