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

verify_telemetrygen() { "$1" --help >/dev/null; }

# shellcheck source-path=SCRIPTDIR source=../go-install-lib.sh
source "${HERE}/../go-install-lib.sh"
go_install_cached telemetrygen "${MODULE}" "${TELEMETRYGEN_VERSION}" "${TELEMETRYGEN_BIN}" \
  "-s -w" verify_telemetrygen
