# Real data-plane peers for the end-to-end tests, installed from registries and cached
# by version under $(XDG_CACHE_HOME or ~/.cache)/telemux/:
#   - Azurite (Azure Blob emulator) from npm, see e2e/azurite/;
#   - telemetrygen (OTLP load generator) from the Go module proxy, see e2e/telemetrygen/.
# Included by the main Makefile, which runs from the repository root. Nothing is run
# at parse time: the variables below are only the paths the install scripts print.

# Directories of this fragment's files, taken before any other include changes
# MAKEFILE_LIST.
DATAPLANE_E2E_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
AZURITE_DIR := $(DATAPLANE_E2E_DIR)azurite
TELEMETRYGEN_DIR := $(DATAPLANE_E2E_DIR)telemetrygen

# AZURITE_VERSION, TELEMETRYGEN_VERSION
include $(AZURITE_DIR)/versions.env
include $(TELEMETRYGEN_DIR)/versions.env

DATAPLANE_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/telemux
# The cached executables (same paths the install scripts print).
AZURITE_BIN := $(DATAPLANE_CACHE)/azurite-$(AZURITE_VERSION)/node_modules/.bin/azurite-blob
TELEMETRYGEN_BIN := $(DATAPLANE_CACHE)/bin/telemetrygen-$(TELEMETRYGEN_VERSION)

.PHONY: azurite telemetrygen dataplane-tools

# Install Azurite with npm; instant when already cached.
azurite:
	bash $(AZURITE_DIR)/install-azurite.sh

# go install telemetrygen; instant when already cached.
telemetrygen:
	bash $(TELEMETRYGEN_DIR)/install-telemetrygen.sh

dataplane-tools: azurite telemetrygen
