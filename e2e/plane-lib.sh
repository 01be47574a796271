# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# Shared settings and helpers of the local test control plane; sourced by
# cluster-up.sh and cluster-down.sh (not executable on its own).

PLANE_E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLANE_REPO_ROOT="$(cd "${PLANE_E2E_DIR}/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "${PLANE_E2E_DIR}/versions.env"

PLANE_BIN_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/telemux/bin"
# target/ is git-ignored; everything the running plane writes lives here.
PLANE_DIR="${PLANE_DIR:-${PLANE_REPO_ROOT}/target/plane}"
# Absolute, so the printed kubeconfig path works from any directory.
[[ "${PLANE_DIR}" == /* ]] || PLANE_DIR="${PWD}/${PLANE_DIR}"
PLANE_KUBECONFIG="${PLANE_DIR}/kubeconfig"

# Loopback ports, all away from the usual defaults (2379/2380, 6443, 10257, 10259,
# 10247) so the plane can coexist with a real cluster or kind on the same machine.
PLANE_APISERVER_PORT="${PLANE_APISERVER_PORT:-16443}"
PLANE_ETCD_PORT="${PLANE_ETCD_PORT:-23790}"
PLANE_ETCD_PEER_PORT="${PLANE_ETCD_PEER_PORT:-23800}"
PLANE_KCM_PORT="${PLANE_KCM_PORT:-20257}"
PLANE_SCHEDULER_PORT="${PLANE_SCHEDULER_PORT:-20259}"
PLANE_KWOK_PORT="${PLANE_KWOK_PORT:-20247}"

KUBECTL="${KUBECTL:-kubectl}"

# Start order; cluster-down stops them in reverse.
PLANE_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

plane_log() { printf '[%s %s] %s\n' "${PLANE_SCRIPT:-plane}" "$(date +%H:%M:%S)" "$*" >&2; }

# Versioned cached binary of a component.
plane_binary() {
  case "$1" in
    etcd) echo "${PLANE_BIN_DIR}/etcd-${ETCD_VERSION}" ;;
    kwok) echo "${PLANE_BIN_DIR}/kwok-${KWOK_VERSION}" ;;
    kube-*) echo "${PLANE_BIN_DIR}/$1-${KUBE_VERSION}" ;;
    *) return 1 ;;
  esac
}

# argv[0] of a process, empty if it is gone (or a kernel thread).
plane_argv0() {
  local argv0=""
  # cmdline is NUL-separated; read the first field only.
  { IFS= read -r -d '' argv0 <"/proc/$1/cmdline"; } 2>/dev/null || true
  printf '%s' "${argv0}"
}

# True if pid runs a cached binary of the component (any version: versions.env may
# have changed since the plane was started).
plane_pid_is() {
  local pid="$1" name="$2" argv0
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  argv0="$(plane_argv0 "${pid}")"
  [[ "${argv0}" == "${PLANE_BIN_DIR}/${name}-v"* ]]
}

# Pid recorded for a component, empty if none.
plane_recorded_pid() {
  local f="${PLANE_DIR}/pids/$1.pid" pid=""
  if [[ -f "${f}" ]]; then read -r pid <"${f}" || true; fi
  printf '%s' "${pid}"
}

# Lines "pid argv0" of every process started from the plane's binary cache, whatever
# PLANE_DIR it belongs to. Only argv[0] is compared, so e.g. a grep for the path
# does not count.
plane_stray_processes() {
  local p pid argv0
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    argv0="$(plane_argv0 "${pid}")"
    if [[ "${argv0}" == "${PLANE_BIN_DIR}/"* ]]; then
      printf '%s %s\n' "${pid}" "${argv0}"
    fi
  done
}
