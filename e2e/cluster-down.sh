#!/usr/bin/env bash
# Stop the local test control plane started by cluster-up.sh and delete its etcd data
# (certificates and logs are kept). Only processes recorded in $PLANE_DIR/pids are
# signalled, and only if they still run a plane binary. Afterwards no process of the
# plane's binary cache may remain, or this fails.
#   --check   only verify that no plane process runs (exit 1 if one does)
set -euo pipefail

PLANE_SCRIPT=cluster-down
# shellcheck source-path=SCRIPTDIR source=plane-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/plane-lib.sh"

# Seconds to wait after SIGTERM before SIGKILL.
STOP_TIMEOUT="${PLANE_STOP_TIMEOUT:-15}"

check_none_left() {
  local stray line
  stray="$(plane_stray_processes)"
  if [[ -n "${stray}" ]]; then
    plane_log "ERROR: plane processes (binaries under ${PLANE_BIN_DIR}) are still running:"
    while read -r line; do plane_log "  pid ${line}"; done <<<"${stray}"
    plane_log "they may belong to another PLANE_DIR; check /proc/<pid>/cmdline, stop them with that plane's cluster-down"
    return 1
  fi
}

if [[ "${1:-}" == "--check" ]]; then
  check_none_left
  plane_log "no plane process running"
  exit 0
fi

stop_component() {
  local name="$1" pidfile="${PLANE_DIR}/pids/$1.pid" pid deadline
  [[ -f "${pidfile}" ]] || return 0
  pid="$(plane_recorded_pid "${name}")"
  if ! plane_pid_is "${pid}" "${name}"; then
    # Exited already, or the pid was reused by something else: never signal it.
    plane_log "${name}: not running (stale pid file)"
    rm -f "${pidfile}"
    return 0
  fi
  kill -TERM "${pid}" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while plane_pid_is "${pid}" "${name}" && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if plane_pid_is "${pid}" "${name}"; then
    plane_log "${name}: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while plane_pid_is "${pid}" "${name}" && ((SECONDS < deadline)); do
      sleep 0.2
    done
  fi
  if plane_pid_is "${pid}" "${name}"; then
    plane_log "ERROR: ${name} (pid ${pid}) survived SIGKILL"
    return 1
  fi
  plane_log "${name}: stopped (pid ${pid})"
  rm -f "${pidfile}"
}

failed=0
# Reverse start order: clients first, etcd last.
for ((i = ${#PLANE_COMPONENTS[@]} - 1; i >= 0; i--)); do
  stop_component "${PLANE_COMPONENTS[i]}" || failed=1
done

if ((failed == 0)); then
  # A test plane never needs old state; certs stay so kubeconfigs remain valid.
  rm -rf "${PLANE_DIR}/etcd"
fi

check_none_left || failed=1
if ((failed != 0)); then
  exit 1
fi
plane_log "plane stopped"
