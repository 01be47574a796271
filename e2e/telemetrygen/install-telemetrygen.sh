#!/usr/bin/env bash
# Install telemetrygen (the OpenTelemetry load generator from collector-contrib) with
# `go install` from the Go module proxy, cached by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/telemux/bin/telemetrygen-<TELEMETRYGEN_VERSION>
# and print that path (last line of stdout). A warm run is instant.
#
# Usage: install-telemetrygen.sh               install if needed, print the binary path
#        install-telemetrygen.sh --print-path  only print the binary path
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "${HERE}/versions.env"

MODULE="github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/telemux"
BIN_DIR="${CACHE_ROOT}/bin"
TELEMETRYGEN_BIN="${BIN_DIR}/telemetrygen-${TELEMETRYGEN_VERSION}"

case "${1:-}" in
  --print-path)
    echo "${TELEMETRYGEN_BIN}"
    exit 0
    ;;
  '') ;;
  *)
    echo "usage: $0 [--print-path]" >&2
    exit 2
    ;;
esac

log() { printf '[install-telemetrygen %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The binary is only ever renamed into place complete, so existing means installed.
if [[ -x "${TELEMETRYGEN_BIN}" ]]; then
  log "cached: ${TELEMETRYGEN_BIN}"
  echo "${TELEMETRYGEN_BIN}"
  exit 0
fi

mkdir -p "${BIN_DIR}"

# Prefer a go on PATH, fall back to the usual install location.
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "${GO}" ]]; then
  echo "install-telemetrygen: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi
# Never let go switch to (i.e. download) another toolchain; static binary, no cgo.
export GOTOOLCHAIN=local CGO_ENABLED=0

TOTAL_START=${SECONDS}

# Concurrent runs (two worktrees, make -j): serialize them; the second one then finds
# the binary cached.
if command -v flock >/dev/null; then
  exec 9>"${CACHE_ROOT}/.telemetrygen.lock"
  flock 9
  if [[ -x "${TELEMETRYGEN_BIN}" ]]; then
    log "cached (installed by a concurrent run): ${TELEMETRYGEN_BIN}"
    echo "${TELEMETRYGEN_BIN}"
    exit 0
  fi
fi

# GOBIN is a temporary dir next to the final binary (same filesystem) so the final `mv`
# is an atomic rename; an interrupted build leaves at most this dir behind. Leftovers of
# killed runs (older than 10 hours) are removed.
find "${BIN_DIR}" -maxdepth 1 -name '.build-telemetrygen.*' -mmin +600 -exec rm -rf {} + 2>/dev/null || true
TMP_OUT="$(mktemp -d "${BIN_DIR}/.build-telemetrygen.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT
# Make INT/TERM go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

log "go install ${MODULE}@${TELEMETRYGEN_VERSION}"
# Run outside any module, so a go.mod/go.work around the caller's directory is ignored.
(cd "${TMP_OUT}" && GOBIN="${TMP_OUT}" "${GO}" install -trimpath -ldflags "-s -w" \
  "${MODULE}@${TELEMETRYGEN_VERSION}")
built="${TMP_OUT}/telemetrygen"
if [[ ! -x "${built}" ]]; then
  echo "install-telemetrygen: go install produced no ${built}" >&2
  exit 1
fi
"${built}" --help >/dev/null
mv -f "${built}" "${TELEMETRYGEN_BIN}"

log "done in $((SECONDS - TOTAL_START))s: ${TELEMETRYGEN_BIN}"
echo "${TELEMETRYGEN_BIN}"
