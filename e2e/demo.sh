#!/usr/bin/env bash
# `make demo`: the whole flow on this machine, no cloud needed.
#
#   1. the local control plane (make cluster-up) with the CRDs (make install-crds)
#   2. the App Insights ingestion emulator (telemux-azure-emulator) on a fixed loopback port
#   3. the operator (telemux run), checking configs with the real collector
#   4. config/samples/, with the tenants' connection strings pointing at the emulator
#   5. wait until both tenants and the RegionalCollector are Ready
#   6. the real collector as a local process, from exactly the ConfigMap + Secret the operator
#      rendered (telemux-local-collector: the path rewriting the data-plane tests use)
#   7. telemetry for acme and globex (telemetrygen), each with its own ingestion credential
#   8. what the emulator received, per tenant, with a redacted attribute
#
# Everything started keeps running so you can explore; `make demo-down` stops it all.
#
# Usage: demo.sh [up]   run the demo (stops the processes of a previous run first)
#        demo.sh stop   stop the demo's collector, operator and emulator (the plane stays up)
#        demo.sh down   stop them and the local plane (make cluster-down)
#
# Environment (all optional):
#   PLANE_DIR, PLANE_*_PORT   which local plane (see e2e/README.md); default target/plane
#   DEMO_DIR                  logs, pids, generated files; default target/demo
#   DEMO_INGESTION_PORT       ingestion emulator (18181)
#   DEMO_OTLP_GRPC_PORT, DEMO_OTLP_HTTP_PORT       collector OTLP receivers (14317, 14318)
#   DEMO_COLLECTOR_HEALTH_PORT, DEMO_COLLECTOR_METRICS_PORT   (14133, 14888)
#   DEMO_OPERATOR_METRICS_PORT   operator metrics, if `telemux run` has --metrics-bind-address (18080)
#   DEMO_WAIT_SECONDS         how long to wait for Ready and for delivery (180)
#   OTELCOL_BIN, TELEMETRYGEN_BIN   the real components (default: the cached builds)
# The ports are on 127.0.0.1 and below the ephemeral range the tests pick free ports from.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/.." && pwd)"
cd "${REPO}"

MAKE="${MAKE:-make}"
KUBECTL="${KUBECTL:-kubectl}"
CARGO="${CARGO:-cargo}"

# The same plane the Makefile uses (PLANE_DIR, made absolute, and its kubeconfig).
PLANE_DIR="${PLANE_DIR:-${REPO}/target/plane}"
[[ "${PLANE_DIR}" == /* ]] || PLANE_DIR="${REPO}/${PLANE_DIR}"
export PLANE_DIR
PLANE_KUBECONFIG="${PLANE_DIR}/kubeconfig"

DEMO_DIR="${DEMO_DIR:-${REPO}/target/demo}"
[[ "${DEMO_DIR}" == /* ]] || DEMO_DIR="${REPO}/${DEMO_DIR}"
INGESTION_PORT="${DEMO_INGESTION_PORT:-18181}"
OTLP_GRPC_PORT="${DEMO_OTLP_GRPC_PORT:-14317}"
OTLP_HTTP_PORT="${DEMO_OTLP_HTTP_PORT:-14318}"
HEALTH_PORT="${DEMO_COLLECTOR_HEALTH_PORT:-14133}"
COLLECTOR_METRICS_PORT="${DEMO_COLLECTOR_METRICS_PORT:-14888}"
OPERATOR_METRICS_PORT="${DEMO_OPERATOR_METRICS_PORT:-18080}"
WAIT_SECONDS="${DEMO_WAIT_SECONDS:-180}"

INGESTION_ENDPOINT="http://127.0.0.1:${INGESTION_PORT}/"
NAMESPACE=telemux-demo
COLLECTOR=westeurope
TENANTS=(acme globex)
# Spans per tenant: telemetrygen sends each trace as a parent and one child span.
TRACES=20

# Stopped in this order (the collector first: it exports to the emulator).
PROCESSES=(collector operator emulator)

STEP=0
step() {
  STEP=$((STEP + 1))
  printf '\n==> [%s] %s\n' "${STEP}" "$*"
}
info() { printf '    %s\n' "$*"; }
fail() {
  printf '\ndemo FAILED: %s\n' "$*" >&2
  printf 'Logs are in %s; "make demo-down" stops everything.\n' "${DEMO_DIR}" >&2
  exit 1
}
# Any other failing command; reported once, by the main shell (a failure inside $(...) also
# fails the command that used it).
on_error() {
  ((BASH_SUBSHELL == 0)) || exit 1
  fail "command failed (e2e/demo.sh line $1): $2"
}
trap 'on_error "${LINENO}" "${BASH_COMMAND}"' ERR

k() { "${KUBECTL}" --kubeconfig "${PLANE_KUBECONFIG}" --request-timeout=20s "$@"; }

# ------------------------------------------------------------------- processes
# Each started process has DEMO_DIR/pids/<name>.pid with "<pid> <argv0>"; it is only ever
# signalled while /proc/<pid>/cmdline still starts with that argv0 (so never a reused pid).

argv0_of() {
  local argv0=""
  { IFS= read -r -d '' argv0 <"/proc/$1/cmdline"; } 2>/dev/null || true
  printf '%s' "${argv0}"
}

# True if the recorded process of <name> runs; sets PID.
running() {
  local f="${DEMO_DIR}/pids/$1.pid" expected=""
  PID=""
  [[ -f "${f}" ]] || return 1
  read -r PID expected <"${f}" || true
  [[ "${PID}" =~ ^[0-9]+$ && -n "${expected}" && "$(argv0_of "${PID}")" == "${expected}" ]]
}

stop_process() {
  local name="$1" i
  if running "${name}"; then
    kill -TERM "${PID}" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      running "${name}" || break
      sleep 0.1
    done
    if running "${name}"; then
      kill -KILL "${PID}" 2>/dev/null || true
      info "stopped ${name} (pid ${PID}, SIGKILL after 15 s)"
    else
      info "stopped ${name} (pid ${PID})"
    fi
  fi
  rm -f "${DEMO_DIR}/pids/${name}.pid"
}

stop_all() {
  local name
  for name in "${PROCESSES[@]}"; do stop_process "${name}"; done
}

# start <name> <expected argv0 once running> <command...>: in its own session (a Ctrl-C in
# this terminal does not reach it), output to DEMO_DIR/<name>.log.
start_process() {
  local name="$1" argv0="$2"
  shift 2
  setsid "$@" >"${DEMO_DIR}/${name}.log" 2>&1 </dev/null &
  echo "$! ${argv0}" >"${DEMO_DIR}/pids/${name}.pid"
}

# Fails with the log's tail unless <name> keeps running.
check_alive() {
  local name="$1"
  if ! running "${name}"; then
    tail -n 30 "${DEMO_DIR}/${name}.log" >&2 || true
    fail "${name} exited (log above: ${DEMO_DIR}/${name}.log)"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until <seconds> <command...>: retries the command (quietly) every 0.5 s.
wait_until() {
  local seconds="$1" deadline
  shift
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# ------------------------------------------------------------------------ down
case "${1:-up}" in
  up) ;;
  stop)
    echo "Stopping the demo's processes (${DEMO_DIR}/pids)"
    stop_all
    exit 0
    ;;
  down)
    echo "Stopping the demo's processes (${DEMO_DIR}/pids)"
    stop_all
    echo "Stopping the local plane (${PLANE_DIR})"
    if ! "${MAKE}" --no-print-directory -C "${REPO}" cluster-down PLANE_DIR="${PLANE_DIR}"; then
      # cluster-down also fails when it sees processes of another plane (another PLANE_DIR)
      # or collectors that tests run. It removes each pid file once that component stopped.
      if compgen -G "${PLANE_DIR}/pids/*.pid" >/dev/null; then
        fail "make cluster-down could not stop this plane (its messages are above)"
      fi
      echo "The demo and its plane (${PLANE_DIR}) are stopped; the processes cluster-down listed"
      echo "above belong to something else (another plane, or tests) and were left alone."
    fi
    exit 0
    ;;
  *)
    echo "usage: $0 [up|stop|down]" >&2
    exit 2
    ;;
esac

# -------------------------------------------------------------------------- up
for tool in "${KUBECTL}" "${CARGO}" "${MAKE}" curl jq base64 setsid sed; do
  command -v "${tool}" >/dev/null || fail "missing required tool: ${tool}"
done

mkdir -p "${DEMO_DIR}/pids"

step "Stopping the processes of a previous demo run, if any"
stop_all
for port in "${INGESTION_PORT}" "${OTLP_GRPC_PORT}" "${OTLP_HTTP_PORT}" "${HEALTH_PORT}" \
  "${COLLECTOR_METRICS_PORT}" "${OPERATOR_METRICS_PORT}"; do
  if port_in_use "${port}"; then
    fail "port 127.0.0.1:${port} is in use by another program (set the DEMO_*_PORT variables, see e2e/demo.sh)"
  fi
done

step "Local control plane and CRDs (make cluster-up install-crds; a first run builds the plane: ~17 min)"
"${MAKE}" --no-print-directory -C "${REPO}" cluster-up install-crds PLANE_DIR="${PLANE_DIR}" ||
  fail "the local plane did not come up (logs: ${PLANE_DIR}/logs/)"

step "The real collector and telemetrygen (make collector telemetrygen; cached under ~/.cache/telemux, a first build ~10 min)"
"${MAKE}" --no-print-directory -C "${REPO}" collector telemetrygen ||
  fail "building the collector or telemetrygen failed"
OTELCOL_BIN="${OTELCOL_BIN:-$(bash "${HERE}/collector/install-collector.sh" --print-path)}"
TELEMETRYGEN_BIN="${TELEMETRYGEN_BIN:-$(bash "${HERE}/telemetrygen/install-telemetrygen.sh" --print-path)}"
[[ -x "${OTELCOL_BIN}" ]] || fail "no collector binary at ${OTELCOL_BIN}"
[[ -x "${TELEMETRYGEN_BIN}" ]] || fail "no telemetrygen binary at ${TELEMETRYGEN_BIN}"
info "collector:    ${OTELCOL_BIN}"
info "telemetrygen: ${TELEMETRYGEN_BIN}"

step "Building the operator and the testkit binaries (cargo build --locked)"
# Built here, in the foreground, so a build error (or a wait for cargo's lock) shows; the
# processes below are then the built binaries themselves, so their pid files are exact.
"${CARGO}" build --locked -p telemux --bin telemux || fail "building the operator failed"
"${CARGO}" build --locked -p telemux-testkit --bin telemux-azure-emulator --bin telemux-local-collector ||
  fail "building the testkit binaries failed"
TARGET_DIR="$("${CARGO}" metadata --format-version 1 --no-deps | jq -r .target_directory)"
TELEMUX_BIN="${TARGET_DIR}/debug/telemux"
EMULATOR_BIN="${TARGET_DIR}/debug/telemux-azure-emulator"
LOCAL_COLLECTOR_BIN="${TARGET_DIR}/debug/telemux-local-collector"

step "App Insights ingestion emulator on ${INGESTION_ENDPOINT} (log: ${DEMO_DIR}/emulator.log)"
start_process emulator "${EMULATOR_BIN}" "${EMULATOR_BIN}" --ingestion-listen "127.0.0.1:${INGESTION_PORT}"
wait_until 30 curl -fsS "${INGESTION_ENDPOINT}_emulator/requests" || {
  check_alive emulator
  fail "the emulator does not answer on ${INGESTION_ENDPOINT}"
}
check_alive emulator
info "pid ${PID}"

step "Operator (telemux run; log: ${DEMO_DIR}/operator.log)"
# Scoped to the demo's namespace, so it never competes with the operators that integration
# tests run in-process for their own namespaces on the same plane.
# Delivery figures (status.delivery) every 5 s rather than 30, for the demo.
operator_args=(run "--namespace=${NAMESPACE}" "--collector-binary=${OTELCOL_BIN}" "--delivery-interval=5")
# The operator serves /metrics and /readyz (default 0.0.0.0:8080): keep the demo's on loopback.
# (Checked, so the script also runs an operator from before that flag.)
operator_http=""
if "${TELEMUX_BIN}" run --help 2>/dev/null | grep -q -- '--metrics-bind-address'; then
  operator_http="http://127.0.0.1:${OPERATOR_METRICS_PORT}"
  operator_args+=("--metrics-bind-address=127.0.0.1:${OPERATOR_METRICS_PORT}")
fi
start_process operator "${TELEMUX_BIN}" env KUBECONFIG="${PLANE_KUBECONFIG}" "${TELEMUX_BIN}" "${operator_args[@]}"
if [[ -n "${operator_http}" ]]; then
  wait_until 60 curl -fsS "${operator_http}/readyz" || {
    check_alive operator
    fail "the operator is not ready after 60 s (${operator_http}/readyz; log: ${DEMO_DIR}/operator.log)"
  }
else
  sleep 1
fi
check_alive operator
info "pid ${PID}: ${TELEMUX_BIN} ${operator_args[*]}"
[[ -z "${operator_http}" ]] || info "metrics: ${operator_http}/metrics"

step "Applying config/samples/ (namespace ${NAMESPACE}), connection strings pointing at the emulator"
# 10-appinsights-secrets.yaml names real-looking Azure endpoints. The demo applies a copy
# with the same Secrets and instrumentation keys whose IngestionEndpoint is the emulator
# (and without LiveEndpoint); the published sample itself is left as it is.
demo_secrets="${DEMO_DIR}/10-appinsights-secrets.yaml"
{
  echo "# Generated by e2e/demo.sh from config/samples/10-appinsights-secrets.yaml: the same"
  echo "# Secrets and instrumentation keys, ingestion at the local emulator ${INGESTION_ENDPOINT}."
  sed -E \
    -e "s#IngestionEndpoint=[^;\"]*#IngestionEndpoint=${INGESTION_ENDPOINT}#g" \
    -e 's#;LiveEndpoint=[^;"]*##g' \
    config/samples/10-appinsights-secrets.yaml
} >"${demo_secrets}"
(($(grep -c "IngestionEndpoint=${INGESTION_ENDPOINT}" "${demo_secrets}") == ${#TENANTS[@]})) ||
  fail "could not point every connection string of config/samples/10-appinsights-secrets.yaml at the emulator"
apply_args=()
for f in config/samples/*.yaml; do
  if [[ "$(basename "${f}")" == 10-appinsights-secrets.yaml ]]; then
    apply_args+=(-f "${demo_secrets}")
  else
    apply_args+=(-f "${f}")
  fi
done
k apply "${apply_args[@]}"

step "Waiting until the tenants and the RegionalCollector are Ready (up to ${WAIT_SECONDS} s)"
show_state() {
  k get telemux -n "${NAMESPACE}" -o wide >&2 || true
  echo "--- last lines of ${DEMO_DIR}/operator.log" >&2
  tail -n 20 "${DEMO_DIR}/operator.log" >&2 || true
}
ready_args=()
for t in "${TENANTS[@]}"; do ready_args+=("telemetrytenant/${t}"); done
if ! k wait -n "${NAMESPACE}" --for=condition=Ready --timeout="${WAIT_SECONDS}s" \
  "${ready_args[@]}" "regionalcollector/${COLLECTOR}"; then
  show_state
  fail "not Ready within ${WAIT_SECONDS} s (kubectl describe ttenant,rcol -n ${NAMESPACE} says why)"
fi
# Ready may still be the status of a previous run; the collector's Secret is current once it
# carries the emulator's endpoint for every tenant.
rendered_for_emulator() {
  local n
  n="$(k get secret -n "${NAMESPACE}" "${COLLECTOR}-collector-secrets" -o json |
    jq --arg ep "IngestionEndpoint=${INGESTION_ENDPOINT}" \
      '[.data | to_entries[] | .value | @base64d | select(contains($ep))] | length')"
  ((n >= ${#TENANTS[@]}))
}
wait_until "${WAIT_SECONDS}" rendered_for_emulator || {
  show_state
  fail "the operator did not render the emulator's endpoint into Secret ${COLLECTOR}-collector-secrets"
}
echo
k get telemux -n "${NAMESPACE}" -o wide

step "The real collector, from ConfigMap ${COLLECTOR}-collector-config + Secret ${COLLECTOR}-collector-secrets"
collector_step="${STEP}"
collector_dir="${DEMO_DIR}/collector"
rm -rf "${collector_dir}"
# The Secret's files (bcrypt hashes, connection strings) are for this user only.
saved_umask="$(umask)"
umask 077
mkdir -p "${collector_dir}"
k get configmap -n "${NAMESPACE}" "${COLLECTOR}-collector-config" -o json >"${collector_dir}/configmap.json"
k get secret -n "${NAMESPACE}" "${COLLECTOR}-collector-secrets" -o json >"${collector_dir}/secret.json"
# telemux-local-collector writes the Secret's files where the pod would mount them
# (collector/secrets), points the config there, moves the listeners to loopback and then
# becomes the collector (same pid).
start_process collector "${OTELCOL_BIN}" "${LOCAL_COLLECTOR_BIN}" \
  --config-map "${collector_dir}/configmap.json" --secret "${collector_dir}/secret.json" \
  --dir "${collector_dir}" --otelcol "${OTELCOL_BIN}" \
  --grpc-port "${OTLP_GRPC_PORT}" --http-port "${OTLP_HTTP_PORT}" \
  --health-port "${HEALTH_PORT}" --metrics-port "${COLLECTOR_METRICS_PORT}" \
  --metrics-on-every-address
umask "${saved_umask}"
if ! wait_until 60 curl -fsS "http://127.0.0.1:${HEALTH_PORT}/"; then
  check_alive collector
  fail "the collector is not healthy after 60 s (log: ${DEMO_DIR}/collector.log)"
fi
check_alive collector
info "pid ${PID}; OTLP gRPC 127.0.0.1:${OTLP_GRPC_PORT}, OTLP HTTP 127.0.0.1:${OTLP_HTTP_PORT}"
info "files: ${collector_dir}/{config.yaml,loopback.yaml,secrets/} (log: ${DEMO_DIR}/collector.log)"
# The operator reads each collector pod's counters through its Service's EndpointSlices. This
# collector is a local process, not a pod: point an EndpointSlice at it, by this host's address
# (an EndpointSlice may not name loopback).
host_address="$(hostname -I 2>/dev/null | awk '{print $1}')"
[[ -n "${host_address}" ]] || fail "this host has no address outside loopback (hostname -I) for the collector's EndpointSlice"
k apply -f - >/dev/null <<EOF_SLICE || fail "could not create the local collector's EndpointSlice"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${COLLECTOR}-collector-local
  namespace: ${NAMESPACE}
  labels:
    kubernetes.io/service-name: ${COLLECTOR}-collector
    endpointslice.kubernetes.io/managed-by: telemux-demo
    app.kubernetes.io/managed-by: telemux
    app.kubernetes.io/name: telemux-collector
    app.kubernetes.io/component: collector
addressType: IPv4
ports: [{ name: metrics, port: ${COLLECTOR_METRICS_PORT}, protocol: TCP }]
endpoints: [{ addresses: ["${host_address}"], conditions: { ready: true } }]
EOF_SLICE
info "EndpointSlice ${COLLECTOR}-collector-local: the operator reads the collector's counters at ${host_address}:${COLLECTOR_METRICS_PORT}"

step "Sending telemetry: ${TRACES} traces per tenant, each tenant with its own ingestion credential"
secret_value() { k get secret -n "${NAMESPACE}" "$1" -o jsonpath="{.data.$2}" | base64 -d; }
for t in "${TENANTS[@]}"; do
  creds="${t}-ingestion-credentials"
  user="$(secret_value "${creds}" username)"
  password="$(secret_value "${creds}" password)"
  [[ -n "${user}" && -n "${password}" ]] || fail "Secret ${creds} has no username/password"
  auth="$(printf '%s:%s' "${user}" "${password}" | base64 -w0)"
  # PII the collector's baseline redacts (e-mail, IPv4); acme also blocks its own customer
  # numbers (spec.redaction.blockedValues: ACME-[0-9]{8}).
  attributes=("user.email=\"jane.doe@${t}.example\"" 'client.address="203.0.113.7"' "order.id=\"${t}-order-42\"")
  [[ "${t}" == acme ]] && attributes+=('customer.ref="ACME-12345678"')
  info "${t}: user ${user} (password from Secret ${creds}); span attributes ${attributes[*]}"
  attribute_args=()
  for a in "${attributes[@]}"; do attribute_args+=(--telemetry-attributes "${a}"); done
  if ! "${TELEMETRYGEN_BIN}" traces --otlp-endpoint "127.0.0.1:${OTLP_GRPC_PORT}" --otlp-insecure \
    --otlp-header "Authorization=\"Basic ${auth}\"" --service "${t}-checkout" \
    --traces "${TRACES}" --rate 0 "${attribute_args[@]}" >"${DEMO_DIR}/telemetrygen-${t}.log" 2>&1; then
    tail -n 20 "${DEMO_DIR}/telemetrygen-${t}.log" >&2
    fail "telemetrygen failed for ${t} (log: ${DEMO_DIR}/telemetrygen-${t}.log)"
  fi
done

step "Where it landed: the emulated App Insights ingestion (${INGESTION_ENDPOINT})"
declare -A IKEY
for t in "${TENANTS[@]}"; do
  # The connection string the operator gave this tenant (its own Secret <name>-appinsights).
  IKEY[${t}]="$(secret_value "${t}-appinsights" connection-string | sed -nE 's/.*InstrumentationKey=([^;]+).*/\1/p')"
  [[ -n "${IKEY[${t}]}" ]] || fail "no InstrumentationKey in Secret ${t}-appinsights"
done
count_for() { curl -fsS "${INGESTION_ENDPOINT}_emulator/envelopes?ikey=$1" | jq length; }
# The exporter sends each batch right away; wait until every tenant has something and the
# counts stopped moving.
counts=""
settled() {
  local previous="${counts}" t n
  counts=""
  for t in "${TENANTS[@]}"; do
    n="$(count_for "${IKEY[${t}]}")"
    counts+="${t}=${n} "
    ((n > 0)) || return 1
  done
  [[ "${counts}" == "${previous}" ]]
}
deadline=$((SECONDS + WAIT_SECONDS))
until settled; do
  ((SECONDS < deadline)) || {
    tail -n 20 "${DEMO_DIR}/collector.log" >&2 || true
    fail "delivery did not settle within ${WAIT_SECONDS} s (items per tenant: ${counts})"
  }
  sleep 2
done
delivered=0
for t in "${TENANTS[@]}"; do
  envelopes="$(curl -fsS "${INGESTION_ENDPOINT}_emulator/envelopes?ikey=${IKEY[${t}]}")"
  n="$(jq length <<<"${envelopes}")"
  delivered=$((delivered + n))
  echo
  echo "  ${t}: ${n} items for instrumentation key ${IKEY[${t}]} (of $((TRACES * 2)) spans sent)"
  if [[ "${t}" == globex ]]; then
    echo "    (globex samples 50% of its traces: spec.sampling.percentage)"
  fi
  jq -r '[group_by(.baseType)[] | "\(length) \(.[0].baseType)"] | "    by type: " + join(", ")' <<<"${envelopes}"
  echo "    one of them (data.baseData: name and properties, i.e. the span's attributes):"
  jq '([.[] | select(.raw.data.baseData.properties["user.email"] != null)] + .)[0].raw.data.baseData
    | {name, properties}' <<<"${envelopes}" | sed 's/^/      /'
done
# Checked, not just claimed: every item carries the tenant.id of the key it was delivered to,
# and none of the values the collector must redact is left anywhere in any item.
all="$(curl -fsS "${INGESTION_ENDPOINT}_emulator/envelopes")"
total="$(jq length <<<"${all}")"
misrouted=0
for t in "${TENANTS[@]}"; do
  misrouted=$((misrouted + $(jq --arg k "${IKEY[${t}]}" --arg t "${t}" \
    '[.[] | select((.ikey | ascii_downcase) == ($k | ascii_downcase))
          | select(.raw.data.baseData.properties["tenant.id"] != $t)] | length' <<<"${all}")))
done
leaked="$(jq '[.[] | tostring | select(test("jane\\.doe@|203\\.0\\.113\\.7|ACME-12345678"))] | length' <<<"${all}")"
echo
echo "  The emulator's log, one line per request (${DEMO_DIR}/emulator.log):"
grep ' POST ' "${DEMO_DIR}/emulator.log" | tail -n 6 | sed 's/^/    /'
echo
echo "  ${total} items in all: $((total - delivered)) for other keys, ${misrouted} with another tenant's tenant.id,"
echo "  ${leaked} containing an e-mail address, 203.0.113.7 or ACME-12345678 (\"****\" is what"
echo "  the collector's redaction left of them)."
((total == delivered && misrouted == 0 && leaked == 0)) || fail "telemetry was misrouted or not redacted (see above)"

step "What each tenant's status says (status.delivery, read from the collector's counters)"
# The figures follow within the operator's --delivery-interval: wait until each tenant's
# delivered count is what the emulator holds for its key.
figures_match() {
  local t want got
  for t in "${TENANTS[@]}"; do
    want="$(count_for "${IKEY[${t}]}")"
    got="$(k get ttenant "${t}" -n "${NAMESPACE}" -o json |
      jq '[.status.delivery.total[]? | select(.signal == "traces") | .delivered] | add // 0')"
    [[ "${got}" == "${want}" ]] || return 1
  done
}
wait_until "${WAIT_SECONDS}" figures_match ||
  fail "the tenants' status.delivery did not reach what App Insights holds within ${WAIT_SECONDS} s"
k get ttenant -n "${NAMESPACE}" -o wide
echo
k get ttenant acme -n "${NAMESPACE}" -o json |
  jq '{delivery: (.status.delivery | del(.counted)), delivering: (.status.conditions[] | select(.type == "Delivering"))}'

cat <<EOF

==> The demo is running. Explore:

  export KUBECONFIG=${PLANE_KUBECONFIG}
  kubectl get telemux -n ${NAMESPACE} -o wide
  kubectl describe ttenant acme -n ${NAMESPACE}
  kubectl get ttenant acme -n ${NAMESPACE} -o jsonpath='{.status.delivery}' | jq
  kubectl describe rcol ${COLLECTOR} -n ${NAMESPACE}
  curl -s '${INGESTION_ENDPOINT}_emulator/envelopes?ikey=${IKEY[acme]}' | jq '.[0].raw'
  curl -s http://127.0.0.1:${COLLECTOR_METRICS_PORT}/metrics | grep ^telemux_appinsights_items

  The operator serves namespace ${NAMESPACE} only: add your own tenants there.
  Logs: ${DEMO_DIR}/{operator,emulator,collector}.log
  The local collector runs the configuration it was given in step ${collector_step}; the operator
  keeps rendering as tenants change (kubectl get cm ${COLLECTOR}-collector-config -n ${NAMESPACE} -o yaml).
  \`make demo\` again restarts everything with the current one (and re-applies the samples).

  Stop everything (collector, emulator, operator and the plane): make demo-down
EOF
