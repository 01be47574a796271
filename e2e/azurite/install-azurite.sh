#!/usr/bin/env bash
# Install Azurite (the real Azure Storage emulator; only its blob service is used) from
# npm with the machine's Node.js, into a private prefix cached by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/telemux/azurite-<AZURITE_VERSION>/
# and print the path of its `azurite-blob` executable (last line of stdout):
#   ${XDG_CACHE_HOME:-$HOME/.cache}/telemux/azurite-<AZURITE_VERSION>/node_modules/.bin/azurite-blob
# No global install. The prefix is only used once it holds a complete, checked install
# (marker file .telemux-installed); a partial one is replaced. A warm run is instant.
#
# Usage: install-azurite.sh               install if needed, print the executable's path
#        install-azurite.sh --print-path  only print the executable's path
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "${HERE}/versions.env"

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/telemux"
PREFIX="${CACHE_ROOT}/azurite-${AZURITE_VERSION}"
AZURITE_BLOB="${PREFIX}/node_modules/.bin/azurite-blob"
MARKER="${PREFIX}/.telemux-installed"

case "${1:-}" in
  --print-path)
    echo "${AZURITE_BLOB}"
    exit 0
    ;;
  '') ;;
  *)
    echo "usage: $0 [--print-path]" >&2
    exit 2
    ;;
esac

log() { printf '[install-azurite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Complete: the marker (written last, after the version check) names this version.
is_cached() {
  [[ -x "${AZURITE_BLOB}" && -f "${MARKER}" ]] &&
    [[ "$(cat "${MARKER}")" == "azurite@${AZURITE_VERSION}" ]]
}

if is_cached; then
  log "cached: ${AZURITE_BLOB}"
  echo "${AZURITE_BLOB}"
  exit 0
fi

for tool in node npm; do
  if ! command -v "${tool}" >/dev/null; then
    echo "install-azurite: ${tool} not found on PATH (Azurite needs Node.js and npm)" >&2
    exit 1
  fi
done

mkdir -p "${CACHE_ROOT}"
TOTAL_START=${SECONDS}

# Concurrent runs (two worktrees, make -j): serialize them; the second one then finds
# the install cached.
if command -v flock >/dev/null; then
  exec 9>"${CACHE_ROOT}/.azurite.lock"
  flock 9
  if is_cached; then
    log "cached (installed by a concurrent run): ${AZURITE_BLOB}"
    echo "${AZURITE_BLOB}"
    exit 0
  fi
fi

# Install into a temporary prefix next to the final one (same filesystem), then rename:
# an interrupted install never leaves a half-filled prefix under the final name. npm's
# .bin links are relative, so the prefix can be moved. Leftovers of killed runs (older
# than 10 hours) are removed.
find "${CACHE_ROOT}" -maxdepth 1 -name '.install-azurite.*' -mmin +600 -exec rm -rf {} + 2>/dev/null || true
TMP_PREFIX="$(mktemp -d "${CACHE_ROOT}/.install-azurite.XXXXXX")"
chmod 755 "${TMP_PREFIX}"
trap 'rm -rf "${TMP_PREFIX}" "${TMP_PREFIX}.stale"' EXIT
# Make INT/TERM go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

log "npm install azurite@${AZURITE_VERSION} (node $(node --version), npm $(npm --version 2>/dev/null))"
start=${SECONDS}
# A private package.json, so npm neither walks up to a parent project nor saves ranges.
printf '{ "name": "telemux-azurite", "private": true }\n' >"${TMP_PREFIX}/package.json"
npm install --prefix "${TMP_PREFIX}" --no-audit --no-fund --no-update-notifier \
  --save-exact --loglevel=error "azurite@${AZURITE_VERSION}" >"${TMP_PREFIX}/npm.log" 2>&1 || {
  status=$?
  tail -n 40 "${TMP_PREFIX}/npm.log" >&2
  echo "install-azurite: npm install failed (exit ${status}); log above" >&2
  exit "${status}"
}
log "npm install done in $((SECONDS - start))s"

# The executable must exist and run, and report the pinned version.
tmp_bin="${TMP_PREFIX}/node_modules/.bin/azurite-blob"
if [[ ! -x "${tmp_bin}" ]]; then
  echo "install-azurite: npm installed no ${tmp_bin}" >&2
  exit 1
fi
got="$("${tmp_bin}" --version 2>&1 | tail -n 1)" || {
  echo "install-azurite: '${tmp_bin} --version' failed: ${got}" >&2
  exit 1
}
if [[ "${got}" != "${AZURITE_VERSION}" ]]; then
  echo "install-azurite: azurite-blob --version printed '${got}', expected ${AZURITE_VERSION}" >&2
  exit 1
fi
rm -f "${TMP_PREFIX}/npm.log"
echo "azurite@${AZURITE_VERSION}" >"${TMP_PREFIX}/.telemux-installed"

# Replace whatever incomplete install sits under the final name: rename it aside (the
# EXIT trap deletes it, after the path is printed) and rename the new prefix in.
if [[ -e "${PREFIX}" ]]; then
  log "replacing incomplete install ${PREFIX}"
  mv "${PREFIX}" "${TMP_PREFIX}.stale"
fi
mv "${TMP_PREFIX}" "${PREFIX}"

log "done in $((SECONDS - TOTAL_START))s: azurite-blob ${got}"
echo "${AZURITE_BLOB}"
