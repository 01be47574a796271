#!/usr/bin/env bash
# Build the telemux OpenTelemetry Collector distribution (telemux-otelcol) with the
# OpenTelemetry Collector Builder (ocb), from Go modules only, and cache it by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/telemux/bin/otelcol-builder-<OTELCOL_VERSION>
#   ${XDG_CACHE_HOME:-$HOME/.cache}/telemux/bin/otelcol-telemux-<OTELCOL_VERSION>
# plus otelcol-telemux-<OTELCOL_VERSION>.builder-config.yaml, the manifest it was built
# from: when versions.env or builder-config.yaml.in change, the binary is rebuilt.
# Already-cached binaries are skipped, so a warm run takes well under a second.
#
# Usage: install-collector.sh               build if needed, print the binary path
#        install-collector.sh --print-path  only print the binary path
#        install-collector.sh --render      only print the rendered builder manifest
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# telemux's own exporter (a Go module of this repository).
EXPORTER_SRC="$(cd "${HERE}/../../collector/appinsightsexporter" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "${HERE}/versions.env"

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/telemux"
BIN_DIR="${CACHE_ROOT}/bin"
BUILDER_BIN="${BIN_DIR}/otelcol-builder-${OTELCOL_VERSION}"
OTELCOL_BIN="${BIN_DIR}/otelcol-telemux-${OTELCOL_VERSION}"
OTELCOL_MANIFEST="${OTELCOL_BIN}.builder-config.yaml"

# SHA-256 over the exporter's build inputs (sources, go.mod, go.sum; not its tests), so the
# cached binary is rebuilt when they change, whatever folder the checkout is in.
exporter_hash() {
  (cd "${EXPORTER_SRC}" &&
    find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) ! -name '*_test.go' -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
EXPORTER_HASH="$(exporter_hash)"

# Render builder-config.yaml.in: @NAME@ -> $NAME for the versions.env keys, and the
# output and exporter paths (left as @OUTPUT_PATH@ and @APPINSIGHTS_EXPORTER_PATH@ for the
# cached copy that identifies the build).
render_manifest() {
  local out_path="$1" exporter_path="${2:-@APPINSIGHTS_EXPORTER_PATH@}"
  sed -e "s|@OTELCOL_VERSION@|${OTELCOL_VERSION}|g" \
    -e "s|@OTELCOL_STABLE_VERSION@|${OTELCOL_STABLE_VERSION}|g" \
    -e "s|@OTELCOL_CONTRIB_VERSION@|${OTELCOL_CONTRIB_VERSION}|g" \
    -e "s|@OTELCOL_HEALTHCHECK_VERSION@|${OTELCOL_HEALTHCHECK_VERSION}|g" \
    -e "s|@OTELCOL_AZUREMONITOR_VERSION@|${OTELCOL_AZUREMONITOR_VERSION}|g" \
    -e "s|@OTELCOL_ROUTING_VERSION@|${OTELCOL_ROUTING_VERSION}|g" \
    -e "s|@OTELCOL_AZUREBLOB_VERSION@|${OTELCOL_AZUREBLOB_VERSION}|g" \
    -e "s|@OTELCOL_DIST_VERSION@|${OTELCOL_VERSION#v}-telemux|g" \
    -e "s|@OUTPUT_PATH@|${out_path}|g" \
    -e "s|@APPINSIGHTS_EXPORTER_PATH@|${exporter_path}|g" \
    -e "s|@APPINSIGHTS_EXPORTER_HASH@|sha256 ${EXPORTER_HASH}|g" \
    "${HERE}/builder-config.yaml.in"
}

case "${1:-}" in
  --print-path)
    echo "${OTELCOL_BIN}"
    exit 0
    ;;
  --render)
    render_manifest '@OUTPUT_PATH@'
    exit 0
    ;;
  '') ;;
  *)
    echo "usage: $0 [--print-path|--render]" >&2
    exit 2
    ;;
esac

log() { printf '[install-collector %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Up to date when the binary exists and was built from the manifest we would render now.
is_cached() {
  [[ -x "${OTELCOL_BIN}" && -f "${OTELCOL_MANIFEST}" ]] &&
    cmp -s "${OTELCOL_MANIFEST}" <(render_manifest '@OUTPUT_PATH@')
}

if is_cached; then
  log "cached: ${OTELCOL_BIN}"
  echo "${OTELCOL_BIN}"
  exit 0
fi

mkdir -p "${BIN_DIR}"

# Prefer a go on PATH, fall back to the usual install location.
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "${GO}" ]]; then
  echo "install-collector: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi
# The builder runs `go` from PATH: make it the one chosen above.
PATH="$(dirname "${GO}"):${PATH}"
# Never let go switch to (i.e. download) another toolchain; static binaries, no cgo.
export PATH GOTOOLCHAIN=local CGO_ENABLED=0
# The generated module is not in git; stamping version info from VCS would fail.
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-buildvcs=false"

TOTAL_START=${SECONDS}

# Concurrent runs (two worktrees, make -j): serialize them; the second one then finds
# the binary cached.
if command -v flock >/dev/null; then
  exec 9>"${CACHE_ROOT}/.collector.lock"
  flock 9
  if is_cached; then
    log "cached (built by a concurrent run): ${OTELCOL_BIN}"
    echo "${OTELCOL_BIN}"
    exit 0
  fi
fi

# Temporary build outputs live next to the final binaries (same filesystem) so the
# final `mv` is an atomic rename; an interrupted build leaves at most this dir behind.
# Leftovers of killed runs (older than 10 hours) are removed.
find "${BIN_DIR}" -maxdepth 1 -name '.build-otelcol.*' -mmin +600 -exec rm -rf {} + 2>/dev/null || true
TMP_OUT="$(mktemp -d "${BIN_DIR}/.build-otelcol.XXXXXX")"
trap 'rm -rf "${TMP_OUT}"' EXIT
# Make INT/TERM go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The builder (ocb), same version as the core components.
if [[ -x "${BUILDER_BIN}" ]]; then
  log "cached: ${BUILDER_BIN}"
else
  log "go install go.opentelemetry.io/collector/cmd/builder@${OTELCOL_VERSION}"
  start=${SECONDS}
  GOBIN="${TMP_OUT}/gobin" "${GO}" install "go.opentelemetry.io/collector/cmd/builder@${OTELCOL_VERSION}"
  mv -f "${TMP_OUT}/gobin/builder" "${BUILDER_BIN}"
  log "builder installed in $((SECONDS - start))s: ${BUILDER_BIN}"
fi

# 2. The collector: the builder generates the sources, runs `go mod tidy` and builds
#    (-trimpath, -ldflags '-s -w', CGO_ENABLED=0 unless dist.cgo_enabled).
# A copy of the exporter, so that what is built is what was hashed.
mkdir -p "${TMP_OUT}/appinsightsexporter"
(cd "${EXPORTER_SRC}" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) ! -name '*_test.go' -print0 |
  xargs -0 cp --parents -t "${TMP_OUT}/appinsightsexporter")
render_manifest "${TMP_OUT}/dist" "${TMP_OUT}/appinsightsexporter" >"${TMP_OUT}/builder-config.yaml"
log "building telemux-otelcol ${OTELCOL_VERSION} (contrib ${OTELCOL_CONTRIB_VERSION}); a cold build takes minutes"
start=${SECONDS}
(cd "${TMP_OUT}" && "${BUILDER_BIN}" --config "${TMP_OUT}/builder-config.yaml") >"${TMP_OUT}/builder.log" 2>&1 || {
  status=$?
  tail -n 60 "${TMP_OUT}/builder.log" >&2
  echo "install-collector: the builder failed (exit ${status}); log above" >&2
  exit "${status}"
}
built="${TMP_OUT}/dist/telemux-otelcol"
if [[ ! -x "${built}" ]]; then
  tail -n 60 "${TMP_OUT}/builder.log" >&2
  echo "install-collector: the builder produced no ${built}" >&2
  exit 1
fi
"${built}" --version >/dev/null
log "collector built in $((SECONDS - start))s"

render_manifest '@OUTPUT_PATH@' >"${TMP_OUT}/manifest.yaml"
mv -f "${built}" "${OTELCOL_BIN}"
mv -f "${TMP_OUT}/manifest.yaml" "${OTELCOL_MANIFEST}"

log "done in $((SECONDS - TOTAL_START))s: ${OTELCOL_BIN}"
echo "${OTELCOL_BIN}"
