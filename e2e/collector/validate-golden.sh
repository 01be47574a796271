#!/usr/bin/env bash
# Check every rendered collector config of the golden tests (tests/golden/*.config.yaml)
# with the real collector: `otelcol-telemux validate --config=<file>`.
#
# The configs read secrets from /etc/telemux/secrets/<name> (e.g. `${file:...}` and the
# basicauth htpasswd `file:`). Each config is copied to a temporary directory with that
# prefix rewritten to a temporary secrets directory holding dummy files of the names it
# references: the htpasswd file gets one bcrypt user line, a file referenced inside an
# azure_blob exporter an Azurite-style storage connection string, any other file an
# Application Insights connection string. The golden files are not modified.
#
# Usage: validate-golden.sh [golden.config.yaml ...]   (default: all golden configs)
# Environment: OTELCOL_BIN  collector binary (default: the one install-collector.sh
#              builds; it is built when missing).
# Prints one PASS/FAIL line per file (with the collector's error output) and exits
# non-zero when any file fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../.." && pwd)"
SECRETS_PREFIX=/etc/telemux/secrets/

if [[ -z "${OTELCOL_BIN:-}" ]]; then
  OTELCOL_BIN="$(bash "${HERE}/install-collector.sh")"
fi
if [[ ! -x "${OTELCOL_BIN}" ]]; then
  echo "validate-golden: collector binary not found: ${OTELCOL_BIN}" >&2
  exit 1
fi

if (($# > 0)); then
  files=("$@")
else
  shopt -s nullglob
  files=("${REPO}"/tests/golden/*.config.yaml)
  shopt -u nullglob
fi
if ((${#files[@]} == 0)); then
  echo "validate-golden: no golden config files found" >&2
  exit 1
fi

# shellcheck disable=SC2016 # a literal bcrypt hash, not an expansion
HTPASSWD_LINE='acme:$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWa'
APPINSIGHTS_CONNECTION_STRING='InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:1/'
BLOB_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;'

WORK="$(mktemp -d "${TMPDIR:-/tmp}/telemux-validate.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Print "<component> <secret name>" for every secrets reference of a config, where
# <component> is the nearest enclosing component key (2-space indented, e.g.
# `azure_blob/regional`, `basicauth/ingest`).
secret_refs() {
  awk -v prefix="${SECRETS_PREFIX}" '
    /^  [^ #][^:]*:[ ]*$/ { comp = $1; sub(/:$/, "", comp) }
    {
      line = $0
      while ((i = index(line, prefix)) > 0) {
        rest = substr(line, i + length(prefix))
        match(rest, /^[A-Za-z0-9._-]+/)
        if (RLENGTH > 0) print comp, substr(rest, 1, RLENGTH)
        line = substr(rest, RLENGTH > 0 ? RLENGTH + 1 : 1)
      }
    }' "$1"
}

failed=0
passed=0
for f in "${files[@]}"; do
  name="$(basename "${f}")"
  dir="${WORK}/${name%.yaml}"
  secrets="${dir}/secrets"
  mkdir -p "${secrets}"
  while read -r comp secret; do
    [[ -n "${secret}" ]] || continue
    if [[ "${secret}" == htpasswd || "${comp}" == basicauth* ]]; then
      printf '%s\n' "${HTPASSWD_LINE}" >"${secrets}/${secret}"
    elif [[ "${comp}" == azure_blob* || "${comp}" == azureblob* ]]; then
      printf '%s' "${BLOB_CONNECTION_STRING}" >"${secrets}/${secret}"
    else
      printf '%s' "${APPINSIGHTS_CONNECTION_STRING}" >"${secrets}/${secret}"
    fi
  done < <(secret_refs "${f}")
  sed "s|${SECRETS_PREFIX}|${secrets}/|g" "${f}" >"${dir}/${name}"

  if out="$(cd "${dir}" && "${OTELCOL_BIN}" validate --config="${dir}/${name}" 2>&1)"; then
    echo "PASS ${name}"
    passed=$((passed + 1))
  else
    echo "FAIL ${name}"
    # Temporary paths make the messages differ from run to run: show the original ones.
    sed -e "s|${secrets}/|${SECRETS_PREFIX}|g" -e "s|${dir}/|<tmp>/|g" -e 's/^/    /' <<<"${out}"
    failed=$((failed + 1))
  fi
done

echo "${passed} passed, ${failed} failed"
((failed == 0))
