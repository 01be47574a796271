#!/usr/bin/env bash
# Start the local test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok with fake nodes) on loopback and print KUBECONFIG=<path>.
# Idempotent: a plane that is already running and healthy is left alone.
set -euo pipefail

PLANE_SCRIPT=cluster-up
# shellcheck source-path=SCRIPTDIR source=plane-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/plane-lib.sh"

START=${SECONDS}
PKI="${PLANE_DIR}/pki"
NODE_NAMES=(kwok-node-0 kwok-node-1)

for tool in "${KUBECTL}" openssl curl setsid; do
  command -v "${tool}" >/dev/null || { plane_log "missing required tool: ${tool}"; exit 1; }
done

kc() { "${KUBECTL}" --kubeconfig "${PLANE_KUBECONFIG}" --request-timeout=10s "$@"; }

# Every component alive from the binary of the pinned version, apiserver ready.
plane_healthy() {
  local name pid
  [[ -f "${PLANE_KUBECONFIG}" ]] || return 1
  for name in "${PLANE_COMPONENTS[@]}"; do
    pid="$(plane_recorded_pid "${name}")"
    [[ -n "${pid}" && "$(plane_argv0 "${pid}")" == "$(plane_binary "${name}")" ]] || return 1
  done
  [[ "$(kc get --raw=/readyz 2>/dev/null)" == "ok" ]]
}

if plane_healthy; then
  plane_log "plane already running and healthy (${PLANE_DIR})"
  echo "KUBECONFIG=${PLANE_KUBECONFIG}"
  exit 0
fi

# Partial or stale plane (crashed component, other versions): start from scratch.
if compgen -G "${PLANE_DIR}/pids/*.pid" >/dev/null; then
  plane_log "plane in ${PLANE_DIR} is not healthy; stopping it first"
  "${PLANE_E2E_DIR}/cluster-down.sh"
fi

"${PLANE_E2E_DIR}/install-plane.sh"

mkdir -p "${PLANE_DIR}/logs" "${PLANE_DIR}/pids" "${PLANE_DIR}/kubeconfigs"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${PLANE_ETCD_PORT}" "${PLANE_ETCD_PEER_PORT}" "${PLANE_APISERVER_PORT}" \
  "${PLANE_KCM_PORT}" "${PLANE_SCHEDULER_PORT}" "${PLANE_KWOK_PORT}"; do
  if port_in_use "${port}"; then
    plane_log "port 127.0.0.1:${port} is already in use (another plane? see PLANE_*_PORT in e2e/README.md)"
    exit 1
  fi
done

# ---------------------------------------------------------------- certificates
# Made once and reused, so kubeconfigs handed out earlier stay valid across restarts.
gen_pki() {
  local tmp
  tmp="$(mktemp -d "${PLANE_DIR}/.pki.XXXXXX")"
  cat >"${tmp}/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
# In-cluster names too, so the cert also fits clients that use the service name.
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  ca() { # name subject
    openssl req -x509 -new -config "${tmp}/openssl.cnf" -extensions v3_ca -newkey rsa:2048 \
      -nodes -sha256 -days 3650 -subj "$2" -keyout "${tmp}/$1.key" -out "${tmp}/$1.crt" 2>/dev/null
  }
  leaf() { # name subject ca extensions
    openssl req -new -config "${tmp}/openssl.cnf" -newkey rsa:2048 -nodes -subj "$2" \
      -keyout "${tmp}/$1.key" -out "${tmp}/$1.csr" 2>/dev/null
    openssl x509 -req -in "${tmp}/$1.csr" -CA "${tmp}/$3.crt" -CAkey "${tmp}/$3.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
      -extfile "${tmp}/openssl.cnf" -extensions "$4" -out "${tmp}/$1.crt" 2>/dev/null
    rm -f "${tmp}/$1.csr"
  }
  ca serving-ca "/CN=telemux-plane-serving-ca"
  leaf apiserver "/CN=kube-apiserver" serving-ca v3_server
  ca client-ca "/CN=telemux-plane-client-ca"
  # O=system:masters: cluster-admin through RBAC's bootstrap binding.
  leaf admin "/O=system:masters/CN=admin" client-ca v3_client
  # The bootstrap RBAC policy already grants these well-known users what they need.
  leaf kube-controller-manager "/CN=system:kube-controller-manager" client-ca v3_client
  leaf kube-scheduler "/CN=system:kube-scheduler" client-ca v3_client
  # Front proxy (aggregation layer): without it the controller-manager and scheduler
  # log "missing content for CA bundle ... requestheader-client-ca-file" all the time.
  ca front-proxy-ca "/CN=telemux-plane-front-proxy-ca"
  leaf front-proxy-client "/CN=front-proxy-client" front-proxy-ca v3_client
  # Service-account token signing key pair.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${tmp}/sa.key" 2>/dev/null
  openssl pkey -in "${tmp}/sa.key" -pubout -out "${tmp}/sa.pub"
  chmod 600 "${tmp}"/*.key
  touch "${tmp}/.complete"
  rm -rf "${PKI}"
  mv "${tmp}" "${PKI}"
}
# Marker of the current layout; an older or half-written pki is made anew.
if [[ ! -f "${PKI}/.complete" ]]; then
  plane_log "generating certificates in ${PKI}"
  gen_pki
fi

# ---------------------------------------------------------------- kubeconfigs
b64() { base64 <"$1" | tr -d '\n'; }
write_kubeconfig() { # file user
  local tmp="$1.tmp"
  cat >"${tmp}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: telemux-plane
  cluster:
    server: https://127.0.0.1:${PLANE_APISERVER_PORT}
    certificate-authority-data: $(b64 "${PKI}/serving-ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "${PKI}/$2.crt")
    client-key-data: $(b64 "${PKI}/$2.key")
contexts:
- name: telemux-plane
  context:
    cluster: telemux-plane
    user: $2
current-context: telemux-plane
EOF
  chmod 600 "${tmp}"
  mv "${tmp}" "$1"
}
# Rewritten every start: cheap, and follows a changed PLANE_APISERVER_PORT.
write_kubeconfig "${PLANE_KUBECONFIG}" admin
write_kubeconfig "${PLANE_DIR}/kubeconfigs/kube-controller-manager" kube-controller-manager
write_kubeconfig "${PLANE_DIR}/kubeconfigs/kube-scheduler" kube-scheduler

# ---------------------------------------------------------------- processes
# Detached (own session, no stdin) so the plane outlives the calling shell or make;
# cluster-down.sh finds it again through the pid files.
start() { # name args...
  local name="$1" bin
  shift
  bin="$(plane_binary "${name}")"
  setsid "${bin}" "$@" >"${PLANE_DIR}/logs/${name}.log" 2>&1 </dev/null &
  local pid=$! i
  echo "${pid}" >"${PLANE_DIR}/pids/${name}.pid"
  # Until the forked shell has exec'd the binary, /proc shows bash or setsid, which
  # wait_for would take for a dead component: on a loaded machine that window is real.
  for ((i = 0; i < 200; i++)); do
    plane_pid_is "${pid}" "${name}" && break
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.05
  done
  plane_log "started ${name} (pid ${pid})"
}

fail() { # name message
  plane_log "ERROR: $2"
  if [[ -f "${PLANE_DIR}/logs/$1.log" ]]; then
    plane_log "last lines of ${PLANE_DIR}/logs/$1.log:"
    tail -n 30 "${PLANE_DIR}/logs/$1.log" >&2
  fi
  plane_log "the plane is left as is for inspection; stop it with e2e/cluster-down.sh"
  exit 1
}

# Poll a command until it succeeds; fail early if the component's process died.
wait_for() { # name timeout_seconds description command...
  local name="$1" timeout="$2" what="$3" deadline pid
  shift 3
  deadline=$((SECONDS + timeout))
  pid="$(plane_recorded_pid "${name}")"
  until "$@" >/dev/null 2>&1; do
    if ! plane_pid_is "${pid}" "${name}"; then
      fail "${name}" "${name} exited while waiting for: ${what}"
    fi
    if ((SECONDS >= deadline)); then
      fail "${name}" "timed out after ${timeout}s waiting for: ${what}"
    fi
    sleep 0.5
  done
  plane_log "${what}: ok ($((SECONDS - START))s)"
}

# Fresh etcd for every start: a test plane never needs old state.
rm -rf "${PLANE_DIR}/etcd"
start etcd \
  --name=plane \
  --data-dir="${PLANE_DIR}/etcd" \
  --listen-client-urls="http://127.0.0.1:${PLANE_ETCD_PORT}" \
  --advertise-client-urls="http://127.0.0.1:${PLANE_ETCD_PORT}" \
  --listen-peer-urls="http://127.0.0.1:${PLANE_ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls="http://127.0.0.1:${PLANE_ETCD_PEER_PORT}" \
  --initial-cluster="plane=http://127.0.0.1:${PLANE_ETCD_PEER_PORT}" \
  --initial-cluster-state=new \
  --unsafe-no-fsync \
  --log-level=warn
etcd_healthy() { curl -fsS "http://127.0.0.1:${PLANE_ETCD_PORT}/health" | grep -q '"health":"true"'; }
wait_for etcd 30 "etcd healthy" etcd_healthy

# OwnerReferencesPermissionEnforcement (as on OpenShift and hardened clusters): changing a
# child's ownerReferences needs `delete` on it, setting blockOwnerDeletion needs `update` on
# the owner's finalizers. The tests run the operator with exactly the chart's RBAC, which
# grants neither, so they prove telemux needs neither.
# --advertise-address/--endpoint-reconciler-type=none: no default route is needed and
# the `kubernetes` Service endpoints are not managed (nothing routes to them anyway).
# 10.96.0.0/16 is only an allocation range for Service ClusterIPs: no traffic.
start kube-apiserver \
  --etcd-servers="http://127.0.0.1:${PLANE_ETCD_PORT}" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --secure-port="${PLANE_APISERVER_PORT}" \
  --tls-cert-file="${PKI}/apiserver.crt" \
  --tls-private-key-file="${PKI}/apiserver.key" \
  --client-ca-file="${PKI}/client-ca.crt" \
  --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="${PKI}/front-proxy-client.crt" \
  --proxy-client-key-file="${PKI}/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
  --service-cluster-ip-range=10.96.0.0/16 \
  --allow-privileged=true \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="${PKI}/sa.pub" \
  --service-account-signing-key-file="${PKI}/sa.key"
apiserver_ready() { [[ "$(kc get --raw=/readyz)" == "ok" ]]; }
wait_for kube-apiserver 90 "kube-apiserver /readyz" apiserver_ready

start kube-controller-manager \
  --kubeconfig="${PLANE_DIR}/kubeconfigs/kube-controller-manager" \
  --authentication-kubeconfig="${PLANE_DIR}/kubeconfigs/kube-controller-manager" \
  --authorization-kubeconfig="${PLANE_DIR}/kubeconfigs/kube-controller-manager" \
  --leader-elect=false \
  --bind-address=127.0.0.1 \
  --secure-port="${PLANE_KCM_PORT}" \
  --controllers='*' \
  --enable-hostpath-provisioner=true \
  --use-service-account-credentials=true \
  --root-ca-file="${PKI}/serving-ca.crt" \
  --service-account-private-key-file="${PKI}/sa.key" \
  --cluster-signing-cert-file="${PKI}/client-ca.crt" \
  --cluster-signing-key-file="${PKI}/client-ca.key"

start kube-scheduler \
  --kubeconfig="${PLANE_DIR}/kubeconfigs/kube-scheduler" \
  --authentication-kubeconfig="${PLANE_DIR}/kubeconfigs/kube-scheduler" \
  --authorization-kubeconfig="${PLANE_DIR}/kubeconfigs/kube-scheduler" \
  --leader-elect=false \
  --bind-address=127.0.0.1 \
  --secure-port="${PLANE_SCHEDULER_PORT}"

# kwok plays the kubelet of every node: heartbeats, pods Running/Ready with fake IPs.
# An explicit config keeps a user's ~/.kwok/kwok.yaml out. It holds no Stage objects,
# so v0.7.0 uses its built-in node/pod stages (v0.8+ would need stage configs here).
# Pod IPs come from the cidr: strings in pod status only, nothing routes to them.
cat >"${PLANE_DIR}/kwok.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: 10.244.0.1/16
EOF
# Node leases are kwok's heartbeat: without them the node controller declares the nodes
# NotReady after its grace period (~50 s) and marks their pods unready for good.
start kwok \
  --config="${PLANE_DIR}/kwok.yaml" \
  --kubeconfig="${PLANE_KUBECONFIG}" \
  --manage-all-nodes=true \
  --node-lease-duration-seconds=40 \
  --server-address="127.0.0.1:${PLANE_KWOK_PORT}"

healthz() { curl -fsSk "https://127.0.0.1:$1/healthz" | grep -qx ok; }
wait_for kube-controller-manager 60 "kube-controller-manager /healthz" healthz "${PLANE_KCM_PORT}"
wait_for kube-scheduler 60 "kube-scheduler /healthz" healthz "${PLANE_SCHEDULER_PORT}"

# ---------------------------------------------------------------- fake nodes
# No taints, so any pod (the operator's included) can land on them. Big allocatable
# so resource requests never block scheduling.
node_manifest() {
  local n
  for n in "${NODE_NAMES[@]}"; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: ${n}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: ${n}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    beta.kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
status:
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
  done
}
node_manifest | kc apply -f - >/dev/null

nodes_ready() {
  local n
  for n in "${NODE_NAMES[@]}"; do
    [[ "$(kc get node "${n}" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == "True" ]] || return 1
  done
}
wait_for kwok 60 "nodes ${NODE_NAMES[*]} Ready" nodes_ready
# The TaintNodesByCondition admission adds node.kubernetes.io/not-ready on create;
# the node lifecycle controller removes it once the node is Ready.
nodes_untainted() { [[ -z "$(kc get nodes "${NODE_NAMES[@]}" -o 'jsonpath={.items[*].spec.taints}')" ]]; }
wait_for kube-controller-manager 60 "nodes untainted" nodes_untainted
# Pods are rejected until their namespace's default ServiceAccount exists.
default_sa() { kc -n default get serviceaccount default; }
wait_for kube-controller-manager 60 "ServiceAccount default/default" default_sa

# Volume claims (the collector StatefulSet's queue volumes) are provisioned by the
# controller-manager's host-path provisioner (test planes only: the directories live under
# /tmp on this machine and go with their claims).
kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-hostpath
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF

plane_log "plane up in $((SECONDS - START))s (logs: ${PLANE_DIR}/logs)"
echo "KUBECONFIG=${PLANE_KUBECONFIG}"
