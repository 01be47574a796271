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

log() { printf '[install-helm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The binary is only ever renamed into place complete, so existing means installed.
if [[ -x "${HELM_BIN}" ]]; then
  log "cached: ${HELM_BIN}"
  echo "${HELM_BIN}"
  exit 0
fi

mkdir -p "${BIN_DIR}"

# Prefer a go on PATH, fall back to the usual install location.
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "${GO}" ]]; then
  echo "install-helm: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi
# Never let go switch to (i.e. download) another toolchain; static binary, no cgo.
export GOTOOLCHAIN=local CGO_ENABLED=0

TOTAL_START=${SECONDS}

# Concurrent runs (two worktrees, make -j): serialize them; the second one then finds
# the binary cached.
if command -v flock >/dev/null; then
  exec 9>"${CACHE_ROOT}/.helm.lock"
  flock 9
  if [[ -x "${HELM_BIN}" ]]; then
    log "cached (installed by a concurrent run): ${HELM_BIN}"
    echo "${HELM_BIN}"
    exit 0
  fi
fi

# GOBIN is a temporary dir next to the final binary (same filesystem) so the final `mv`
# is an atomic rename; an interrupted build leaves at most this dir behind. Leftovers of
# killed runs (older than 10 hours) are removed.
find "${BIN_DIR}" -maxdepth 1 -name '.build-helm.*' -mmin +600 -exec rm -rf {} + 2>/dev/null || true
TMP_OUT="$(mktemp -d "${BIN_DIR}/.build-helm.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT
# Make INT/TERM go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

# The same -X stamps as helm's Makefile (version, and the Kubernetes version assumed
# offline, for rendering and for the deprecation lint).
LDFLAGS="-s -w"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  LDFLAGS+=" -X ${pkg}.k8sVersionMajor=${HELM_KUBE_MAJOR} -X ${pkg}.k8sVersionMinor=${HELM_KUBE_MINOR}"
done

log "go install ${MODULE}@${HELM_VERSION}"
# Run outside any module, so a go.mod/go.work around the caller's directory is ignored.
(cd "${TMP_OUT}" && GOBIN="${TMP_OUT}" "${GO}" install -trimpath -ldflags "${LDFLAGS}" \
  "${MODULE}@${HELM_VERSION}")
built="${TMP_OUT}/helm"
if [[ ! -x "${built}" ]]; then
  echo "install-helm: go install produced no ${built}" >&2
  exit 1
fi
# The stamps took: the version is ours, not the "v3.x" fallback of an unstamped build.
reported="$("${built}" version --template '{{.Version}}')"
if [[ "${reported}" != "${HELM_VERSION}" ]]; then
  echo "install-helm: built helm reports version ${reported}, expected ${HELM_VERSION}" >&2
  exit 1
fi
mv -f "${built}" "${HELM_BIN}"

log "done in $((SECONDS - TOTAL_START))s: ${HELM_BIN}"
echo "${HELM_BIN}"
