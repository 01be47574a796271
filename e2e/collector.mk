# telemux OpenTelemetry Collector distribution (otlp, routing, redaction, azure_monitor,
# azure_blob, ...) built with the OpenTelemetry Collector Builder; see e2e/collector/.
# Included by the main Makefile, which runs from the repository root.

# Directory of this fragment's files (e2e/collector), taken before any other include
# changes MAKEFILE_LIST.
COLLECTOR_DIR := $(dir $(lastword $(MAKEFILE_LIST)))collector

# OTELCOL_VERSION, OTELCOL_STABLE_VERSION, OTELCOL_CONTRIB_VERSION, ...
include $(COLLECTOR_DIR)/versions.env

# The cached collector binary (same path install-collector.sh prints).
OTELCOL_BIN := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/telemux/bin/otelcol-telemux-$(OTELCOL_VERSION)

.PHONY: collector collector-validate-golden

# The golden test that needs the collector: `make unit` leaves it to collector-validate-golden,
# which builds the collector first.
GOLDEN_VALIDATE_TEST := committed_configs_pass_the_collectors_validate

# Build and cache the collector; seconds when already cached.
collector:
	bash $(COLLECTOR_DIR)/install-collector.sh

# `validate` every tests/golden/*.config.yaml with the real collector (tests/golden.rs).
collector-validate-golden: collector
	OTELCOL_BIN='$(OTELCOL_BIN)' $(CARGO) test --locked -p telemux --test golden -- --exact $(GOLDEN_VALIDATE_TEST)
