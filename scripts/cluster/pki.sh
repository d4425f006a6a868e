# Certificates and credentials of the local cluster, made once per state dir. Sourced by up.sh.
# A CA, the API server's serving certificate (loopback, docker0, the first service IP and the
# in-cluster DNS names), a service-account key pair and a static admin token in system:masters.

ensure_pki() {
  [ -f "$PKI_DIR/.done" ] && return 0
  log "generating a CA, serving certificate, service-account keys and admin token in $PKI_DIR"
  mkdir -p "$PKI_DIR" && chmod 700 "$PKI_DIR"
  (
    cd "$PKI_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=omnikube-local-ca" 2>/dev/null
    cat >serving.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$DOCKER_BRIDGE_IP,IP:$SERVICE_FIRST_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile serving.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # Static tokens: the admin (tests, scripts, controllers, kubelet, kube-proxy of this test node).
    printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 24)" >tokens.csv
    chmod 600 ./*.key tokens.csv
  )
  write_kubeconfig
  touch "$PKI_DIR/.done"
}

admin_token() { cut -d, -f1 "$PKI_DIR/tokens.csv"; }

write_kubeconfig() {
  cat >"$KUBECONFIG_PATH" <<KC
apiVersion: v1
kind: Config
clusters:
- name: omnikube-local
  cluster:
    server: $SERVER_URL
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: admin
  user:
    token: $(admin_token)
contexts:
- name: omnikube-local
  context: {cluster: omnikube-local, user: admin}
current-context: omnikube-local
KC
  chmod 600 "$KUBECONFIG_PATH"
}
