# `make demo` / `make demo-down`: the whole flow on this machine (local plane, operator,
# emulated App Insights ingestion, the real collector, telemetry of two tenants); see
# e2e/demo.sh. Included by the main Makefile, which runs from the repository root.

# Directory of this fragment (e2e), taken before any other include changes MAKEFILE_LIST.
DEMO_E2E_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: demo demo-down

demo: ## Local plane, operator, samples, the real collector and telemetry of two tenants into emulated App Insights; left running
	MAKE='$(MAKE)' PLANE_DIR='$(PLANE_DIR)' bash $(DEMO_E2E_DIR)/demo.sh up

demo-down: ## Stop what make demo started: collector, emulator, operator and the local plane
	MAKE='$(MAKE)' PLANE_DIR='$(PLANE_DIR)' bash $(DEMO_E2E_DIR)/demo.sh down
