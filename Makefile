# telemux: the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
include e2e/plane.mk
include e2e/collector.mk
include e2e/dataplane.mk
include e2e/demo.mk
include e2e/helm.mk

# Integration tests talk to this plane only, never to the current kube context.
export TELEMUX_TEST_KUBECONFIG ?= $(PLANE_KUBECONFIG)
# The real components the integration and data-plane tests run.
export OTELCOL_BIN AZURITE_BIN TELEMETRYGEN_BIN
# helm, for the chart's tests.
export HELM_BIN

.PHONY: bench-render bench-throughput bench-memory bench-scale help build crds fmt-check clippy go-lint go-test lint unit integration e2e test run install-crds clean

# telemux's own collector exporter (Go), built into the collector by e2e/collector.
EXPORTER_DIR := collector/appinsightsexporter
GO ?= go
# Never let go switch to (download) another toolchain; go.sum pins every module.
GO_ENV := GOTOOLCHAIN=local GOFLAGS=-mod=readonly

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: ## Build the operator
	$(CARGO) build --locked

crds: ## Regenerate crds/ and the chart's charts/telemux/crds/ from the Rust types
	$(CARGO) run --locked --quiet -- crds --dir crds
	$(CARGO) run --locked --quiet -- crds --dir charts/telemux/crds

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

go-lint: ## gofmt and go vet of the collector exporter
	@unformatted="$$(gofmt -l $(EXPORTER_DIR))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed:"; echo "$$unformatted"; exit 1; fi
	cd $(EXPORTER_DIR) && $(GO_ENV) $(GO) vet ./...

go-test: ## Unit tests of the collector exporter (go test)
	cd $(EXPORTER_DIR) && $(GO_ENV) $(GO) test ./...

lint: fmt-check clippy go-lint ## Formatting, clippy, gofmt and go vet

unit: go-test ## Unit, golden and CRD-freshness tests, the ingestion emulator's tests, the exporter's go tests (no cluster)
	$(CARGO) test --locked -p telemux --lib --bins --test golden --test crds --test versions --test azure_client -- --skip $(GOLDEN_VALIDATE_TEST)
	$(CARGO) test --locked -p telemux-testkit --lib --bins --test ingestion --test arm

integration: collector azurite helm ## Integration, data-plane, runtime and Helm chart tests against a running plane (make cluster-up first)
	$(CARGO) test --locked -p telemux-testkit --test azurite
	$(CARGO) test --locked -p telemux --test plane --test operator --test dataplane --test delivery --test provision --test chart --test runtime

e2e: collector azurite helm cluster-up ## Data-plane tests: the real collector runs what the operator rendered (starts the plane if needed)
	$(CARGO) test --locked -p telemux --test dataplane --test delivery
	@echo "the plane is still up: make cluster-down"

test: lint unit collector-validate-golden ## Everything: lint, unit and golden tests, golden configs through the real collector, integration tests on a fresh local plane
	$(CARGO) test --locked --no-run -p telemux --test plane --test operator --test dataplane --test delivery --test provision --test chart --test runtime
	$(MAKE) --no-print-directory cluster-up
	status=0; $(MAKE) --no-print-directory integration || status=$$?; \
	$(MAKE) --no-print-directory cluster-down || status=1; \
	$(MAKE) --no-print-directory cluster-check-down || status=1; \
	exit $$status

install-crds: cluster-up ## Install the chart's CRDs into the local plane
	kubectl --kubeconfig '$(PLANE_KUBECONFIG)' apply --server-side --field-manager=telemux -f charts/telemux/crds/
	kubectl --kubeconfig '$(PLANE_KUBECONFIG)' wait --for=condition=Established --timeout=60s -f charts/telemux/crds/

# Metrics and probes on loopback: http://127.0.0.1:$(RUN_METRICS_PORT)/metrics
RUN_METRICS_PORT ?= 8080
run: install-crds collector ## Start the local plane, install the CRDs and run the operator in the foreground (configs checked by the built collector)
	@echo "KUBECONFIG=$(PLANE_KUBECONFIG)  (stop the plane with: make cluster-down)"
	KUBECONFIG='$(PLANE_KUBECONFIG)' $(CARGO) run --locked -- run --collector-binary='$(OTELCOL_BIN)' --metrics-bind-address=127.0.0.1:$(RUN_METRICS_PORT)

bench-render: ## Benchmark planning+rendering a collector config at 10..10,000 tenants
	$(CARGO) bench --locked --bench render

bench-throughput: collector telemetrygen ## Spans/s through the real collector at 1, 100 and 1,000 tenants, telemux_appinsights vs azure_monitor
	$(CARGO) bench --locked --bench throughput

bench-memory: collector ## Idle collector RSS per tenant at 1, 100 and 500 tenants, telemux_appinsights vs azure_monitor
	$(CARGO) bench --locked --bench idle_memory

bench-scale: collector install-crds ## BENCH_TENANTS (10,000) tenants over BENCH_REGIONS (1) on the local plane: time from the last create to all Ready, configurations per shard, operator peak RSS
	$(CARGO) build --locked --release --bin telemux
	TELEMUX_TEST_KUBECONFIG='$(PLANE_KUBECONFIG)' $(CARGO) bench --locked --bench scale

clean: cluster-down
	$(CARGO) clean
