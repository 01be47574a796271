# shellcheck shell=bash
# Shared by the install scripts of Go tools (e2e/helm, e2e/telemetrygen): `go install` one
# module from the Go module proxy into the telemux cache, by version, atomically.
# Source it, then call go_install_cached. Expects `set -euo pipefail` in the caller.

# go_install_cached NAME MODULE VERSION DEST LDFLAGS VERIFY
#   NAME     tool name (binary name, log prefix, lock and temp-dir names)
#   MODULE   package path to install, e.g. helm.sh/helm/v3/cmd/helm
#   VERSION  module version, e.g. v3.22.0
#   DEST     the cached binary, e.g. ~/.cache/telemux/bin/helm-v3.22.0
#   LDFLAGS  linker flags (`-s -w` plus any -X stamps)
#   VERIFY   a command run with the built binary's path before it is cached (fails = not cached)
# Prints DEST (last line of stdout). Instant when DEST exists.
go_install_cached() {
  local name=$1 module=$2 version=$3 dest=$4 ldflags=$5 verify=$6
  local bin_dir lock
  bin_dir="$(dirname "${dest}")"
  log() { printf '[install-%s %s] %s\n' "${name}" "$(date +%H:%M:%S)" "$*" >&2; }

  # The binary is only ever renamed into place complete, so existing means installed.
  if [[ -x "${dest}" ]]; then
    log "cached: ${dest}"
    echo "${dest}"
    return 0
  fi
  mkdir -p "${bin_dir}"

  # Prefer a go on PATH, fall back to the usual install location.
  local go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
  if [[ ! -x "${go}" ]]; then
    echo "install-${name}: no Go toolchain found (set GO=/path/to/go)" >&2
    return 1
  fi
  # Never let go switch to (i.e. download) another toolchain; static binary, no cgo.
  export GOTOOLCHAIN=local CGO_ENABLED=0
  local started=${SECONDS}

  # Concurrent runs (two worktrees, make -j): serialize them; the second one then finds
  # the binary cached.
  if command -v flock >/dev/null; then
    lock="$(dirname "${bin_dir}")/.${name}.lock"
    exec 9>"${lock}"
    flock 9
    if [[ -x "${dest}" ]]; then
      log "cached (installed by a concurrent run): ${dest}"
      echo "${dest}"
      return 0
    fi
  fi

  # GOBIN is a temporary dir next to the final binary (same filesystem) so the final `mv`
  # is an atomic rename; an interrupted build leaves at most this dir behind. Leftovers of
  # killed runs (older than 10 hours) are removed.
  find "${bin_dir}" -maxdepth 1 -name ".build-${name}.*" -mmin +600 -exec rm -rf {} + 2>/dev/null || true
  GO_INSTALL_TMP="$(mktemp -d "${bin_dir}/.build-${name}.XXXXXX")"
  trap 'rm -rf "${GO_INSTALL_TMP}"' EXIT
  # Make INT/TERM go through the EXIT trap too.
  trap 'exit 130' INT
  trap 'exit 143' TERM

  log "go install ${module}@${version}"
  # Run outside any module, so a go.mod/go.work around the caller's directory is ignored.
  (cd "${GO_INSTALL_TMP}" && GOBIN="${GO_INSTALL_TMP}" "${go}" install -trimpath \
    -ldflags "${ldflags}" "${module}@${version}")
  local built="${GO_INSTALL_TMP}/${module##*/}"
  if [[ ! -x "${built}" ]]; then
    echo "install-${name}: go install produced no ${built}" >&2
    return 1
  fi
  ${verify} "${built}"
  mv -f "${built}" "${dest}"
  log "done in $((SECONDS - started))s: ${dest}"
  echo "${dest}"
}
