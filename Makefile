# telemux: the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
include e2e/plane.mk
include e2e/collector.mk

# Integration tests talk to this plane only, never to the current kube context.
export TELEMUX_TEST_KUBECONFIG ?= $(PLANE_KUBECONFIG)
# The collector binary that checks configurations in the integration tests.
export OTELCOL_BIN

.PHONY: bench-render help build crds fmt-check clippy lint unit integration test run install-crds clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: ## Build the operator
	$(CARGO) build --locked

crds: ## Regenerate crds/ from the Rust types
	$(CARGO) run --locked --quiet -- crds --dir crds

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

lint: fmt-check clippy ## Formatting and clippy

unit: ## Unit, golden and CRD-freshness tests (no cluster)
	$(CARGO) test --locked --lib --bins --test golden --test crds

integration: collector ## Integration tests against a running plane (make cluster-up first)
	$(CARGO) test --locked --test plane --test operator

test: lint unit collector-validate-golden ## Everything: lint, unit and golden tests, golden configs through the real collector, integration tests on a fresh local plane
	$(CARGO) test --locked --no-run --test plane --test operator
	$(MAKE) --no-print-directory cluster-up
	status=0; $(MAKE) --no-print-directory integration || status=$$?; \
	$(MAKE) --no-print-directory cluster-down || status=1; \
	$(MAKE) --no-print-directory cluster-check-down || status=1; \
	exit $$status

install-crds: cluster-up ## Install the CRDs into the local plane
	kubectl --kubeconfig '$(PLANE_KUBECONFIG)' apply --server-side --field-manager=telemux -f crds/
	kubectl --kubeconfig '$(PLANE_KUBECONFIG)' wait --for=condition=Established --timeout=60s -f crds/

run: install-crds collector ## Start the local plane, install the CRDs and run the operator in the foreground (configs checked by the built collector)
	@echo "KUBECONFIG=$(PLANE_KUBECONFIG)  (stop the plane with: make cluster-down)"
	KUBECONFIG='$(PLANE_KUBECONFIG)' $(CARGO) run --locked -- run --collector-binary='$(OTELCOL_BIN)'

bench-render: ## Benchmark planning+rendering a collector config at 10..10,000 tenants
	$(CARGO) bench --locked --bench render

clean: cluster-down
	$(CARGO) clean
