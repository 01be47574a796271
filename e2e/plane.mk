# Local Kubernetes test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok fake nodes); see e2e/README.md.
# Included by the main Makefile, which runs from the repository root.

# Directory of this fragment (e2e), taken before any other include changes MAKEFILE_LIST.
PLANE_E2E_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

# KUBE_VERSION, ETCD_VERSION, KWOK_VERSION.
include $(PLANE_E2E_DIR)/versions.env

# State of the running plane (certs, kubeconfig, logs, pids, etcd data); target/ is
# git-ignored. Absolute so that tests may run from any directory.
PLANE_DIR ?= $(abspath target/plane)
PLANE_KUBECONFIG := $(PLANE_DIR)/kubeconfig

.PHONY: plane-install cluster-up cluster-down cluster-check-down

# Build and cache the binaries (~/.cache/telemux/bin); seconds when already cached.
plane-install:
	bash $(PLANE_E2E_DIR)/install-plane.sh

# Start the plane (no-op when it is already running and healthy).
cluster-up:
	PLANE_DIR='$(PLANE_DIR)' bash $(PLANE_E2E_DIR)/cluster-up.sh

# Stop the plane and drop its etcd data; fails if a plane process survives.
cluster-down:
	PLANE_DIR='$(PLANE_DIR)' bash $(PLANE_E2E_DIR)/cluster-down.sh

# Fails if any process of the plane's binaries is still running.
cluster-check-down:
	PLANE_DIR='$(PLANE_DIR)' bash $(PLANE_E2E_DIR)/cluster-down.sh --check
