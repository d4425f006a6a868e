# Keep every packet on this machine. Sourced by up.sh and down.sh.
#
# Without these, a pod's connection to an outside address (or to a ClusterIP nobody serves, which
# kube-proxy does not DNAT and docker's FORWARD rules let through) follows docker's NAT out of eth0,
# and the host may ask the cloud metadata address. Each guard is added only when missing, and the
# exact command that removes it is appended to guards.undo; teardown replays that file backwards.

guard() { # guard TABLE CHAIN RULE...: insert a rule at the top of CHAIN unless it is there
  local table=$1 chain=$2; shift 2
  iptables -w -t "$table" -C "$chain" "$@" 2>/dev/null && return 0
  iptables -w -t "$table" -I "$chain" 1 "$@"
  printf 'iptables -w -t %s -D %s %s\n' "$table" "$chain" "$*" >>"$GUARDS_FILE"
}

install_host_guards() {
  mkdir -p "$CLUSTER_DIR"
  guard filter OUTPUT -d 169.254.0.0/16 -j REJECT
  guard filter OUTPUT -d "$SERVICE_CIDR" -j REJECT
}

# Before dockerd starts: docker0 made by us (dockerd adopts an existing bridge), the service range
# routed onto it, and DOCKER-USER (which dockerd keeps and jumps to first from FORWARD) rejecting
# unserved ClusterIPs and anything leaving docker0 for another interface.
install_node_guards() {
  local key
  install_host_guards
  # dockerd turns on forwarding and sets FORWARD's policy to DROP; put both back at teardown.
  if ! grep -q "ip_forward" "$GUARDS_FILE" 2>/dev/null; then
    echo "sysctl -qw net.ipv4.ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)" >>"$GUARDS_FILE"
    echo "iptables -w -P FORWARD $(iptables -w -S FORWARD | awk '$1=="-P" {print $3}')" >>"$GUARDS_FILE"
  fi
  if ! ip link show docker0 >/dev/null 2>&1; then
    ip link add docker0 type bridge
    ip addr add "$DOCKER_BRIDGE_IP/16" dev docker0
    ip link set docker0 up
    echo "ip link del docker0" >>"$GUARDS_FILE"
  fi
  if ! ip route show "$SERVICE_CIDR" | grep -q docker0; then
    ip route add "$SERVICE_CIDR" dev docker0
    echo "ip route del $SERVICE_CIDR dev docker0" >>"$GUARDS_FILE"
  fi
  # The kubelet and kube-proxy set these kernel settings and never put them back.
  if ! grep -q "kernel.panic_on_oops" "$GUARDS_FILE" 2>/dev/null; then
    for key in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
               kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet; do
      [ -e "/proc/sys/${key//.//}" ] && echo "sysctl -qw $key=$(sysctl -n "$key")" >>"$GUARDS_FILE"
    done
  fi
  # A pod's packet to the service range comes in on docker0 and would leave by it again, so the
  # host would answer with an ICMP redirect ("that address is on your link"): the pod then ARPs for
  # a ClusterIP, waits and times out instead of getting the REJECT below. No redirects from here.
  for key in all docker0; do
    if [ "$(sysctl -n "net.ipv4.conf.$key.send_redirects")" != 0 ]; then
      sysctl -qw "net.ipv4.conf.$key.send_redirects=0"
      echo "sysctl -qw net.ipv4.conf.$key.send_redirects=1" >>"$GUARDS_FILE"
    fi
  done
  if ! iptables -w -t filter -L DOCKER-USER -n >/dev/null 2>&1; then
    iptables -w -t filter -N DOCKER-USER
    echo "iptables -w -t filter -X DOCKER-USER" >>"$GUARDS_FILE"
  fi
  guard filter FORWARD -j DOCKER-USER
  guard filter DOCKER-USER -d "$SERVICE_CIDR" -j REJECT
  guard filter DOCKER-USER -i docker0 ! -o docker0 -j REJECT
  # TCP gets a reset rather than an ICMP error: the kernel rate-limits ICMP per pod address, and
  # a busy pod would then see timeouts instead of an immediate "connection refused".
  guard filter DOCKER-USER -p tcp -d "$SERVICE_CIDR" -j REJECT --reject-with tcp-reset
  guard filter DOCKER-USER -p tcp -i docker0 ! -o docker0 -j REJECT --reject-with tcp-reset
}

remove_guards() {
  [ -f "$GUARDS_FILE" ] || return 0
  local line
  tac "$GUARDS_FILE" | while read -r line; do
    # shellcheck disable=SC2086
    $line 2>/dev/null || log "guard already gone: $line"
  done
  rm -f "$GUARDS_FILE"
}

# Rules and chains that dockerd, the kubelet and kube-proxy leave behind when stopped: jumps from
# the built-in chains into their chains, then the chains themselves.
remove_runtime_chains() {
  local table rule chain
  for table in filter nat mangle; do
    iptables -w -t "$table" -S 2>/dev/null \
      | grep -E '^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) ' \
      | grep -E -- '-j (DOCKER|KUBE-)|-[io] docker0 |-s 172\.17\.0\.0/16 ! -o docker0 -j MASQUERADE' \
      | grep -v -- '-j DOCKER-USER$' \
      | while read -r rule; do
          # shellcheck disable=SC2086
          iptables -w -t "$table" ${rule/-A/-D} 2>/dev/null || true
        done || true  # nothing left to delete is fine
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^DOCKER/ || $2 ~ /^KUBE-/) {print $2}'); do
      [ "$chain" = DOCKER-USER ] && continue
      iptables -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^DOCKER/ || $2 ~ /^KUBE-/) {print $2}'); do
      [ "$chain" = DOCKER-USER ] && continue
      iptables -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  # dockerd's own RETURN at the end of DOCKER-USER; our guards in it are undone by remove_guards.
  iptables -w -t filter -D DOCKER-USER -j RETURN 2>/dev/null || true
}
