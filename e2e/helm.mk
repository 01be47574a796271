# helm, go-installed from the Go module proxy and cached by version under
# $(XDG_CACHE_HOME or ~/.cache)/telemux/bin; see e2e/helm/. The chart's tests
# (tests/chart.rs) run it.
# Included by the main Makefile, which runs from the repository root. Nothing is run at
# parse time: HELM_BIN is only the path install-helm.sh prints.

# Directory of this fragment's files (e2e/helm), taken before any other include changes
# MAKEFILE_LIST.
HELM_DIR := $(dir $(lastword $(MAKEFILE_LIST)))helm

# HELM_VERSION, HELM_KUBE_MAJOR, HELM_KUBE_MINOR
include $(HELM_DIR)/versions.env

# The cached helm binary (same path install-helm.sh prints).
HELM_BIN := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/telemux/bin/helm-$(HELM_VERSION)

.PHONY: helm

# go install helm; instant when already cached.
helm:
	bash $(HELM_DIR)/install-helm.sh
