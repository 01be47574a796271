#!/usr/bin/env bash
# Install helm with `go install` from the Go module proxy, cached by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/telemux/bin/helm-<HELM_VERSION>
# and print that path (last line of stdout). A warm run is instant.
#
# The binary is stamped like helm's own release build: `helm version` reports
# HELM_VERSION, and offline `helm template` / `helm lint` assume Kubernetes
# v<HELM_KUBE_MAJOR>.<HELM_KUBE_MINOR>.0 instead of helm's fallback v1.20.0.
#
# Usage: install-helm.sh               install if needed, print the binary path
#        install-helm.sh --print-path  only print the binary path
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "${HERE}/versions.env"

MODULE="helm.sh/helm/v3/cmd/helm"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/telemux"
BIN_DIR="${CACHE_ROOT}/bin"
HELM_BIN="${BIN_DIR}/helm-${HELM_VERSION}"

case "${1:-}" in
  --print-path)
    echo "${HELM_BIN}"
    exit 0
    ;;
  '') ;;
  *)
    echo "usage: $0 [--print-path]" >&2
    exit 2
    ;;
esac

# The same -X stamps as helm's Makefile (version, and the Kubernetes version assumed
# offline, for rendering and for the deprecation lint).
LDFLAGS="-s -w"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  LDFLAGS+=" -X ${pkg}.k8sVersionMajor=${HELM_KUBE_MAJOR} -X ${pkg}.k8sVersionMinor=${HELM_KUBE_MINOR}"
done

# The stamps took: the version is ours, not the "v3.x" fallback of an unstamped build.
verify_helm() {
  local reported
  reported="$("$1" version --template '{{.Version}}')"
  if [[ "${reported}" != "${HELM_VERSION}" ]]; then
    echo "install-helm: built helm reports version ${reported}, expected ${HELM_VERSION}" >&2
    return 1
  fi
}

# shellcheck source-path=SCRIPTDIR source=../go-install-lib.sh
source "${HERE}/../go-install-lib.sh"
go_install_cached helm "${MODULE}" "${HELM_VERSION}" "${HELM_BIN}" "${LDFLAGS}" verify_helm
