#!/bin/sh
# Keeps the containers of docker builds away from the GCE metadata server.
#
#   build-firewall.sh [BRIDGE [HEALTH_PORT]]   install (idempotent)
#   build-firewall.sh remove [BRIDGE]           remove the jumps and chains
#
# BRIDGE (default docker0) is the network builds run on: dockerd's BuildKit
# runs RUN steps on the default bridge, so a Dockerfile from a tracked
# repository could otherwise ask 169.254.169.254 for the VM service account's
# token (Pub/Sub, Firestore, the encryption key, push access). The runner
# itself runs with --network host: its packets leave through OUTPUT, not
# FORWARD, so it keeps its metadata access.
#
# Plain POSIX sh and iptables (-w waits for the xtables lock), so the very
# same file runs on the VM (kgd-build-firewall.service) and in tests.
set -eu

CHAIN=KGD-BUILD
INPUT_CHAIN=KGD-INPUT

ipt() { iptables -w "$@"; }

# Deletes every jump FROM -> TO matching the remaining arguments.
unjump() {
  from=$1 to=$2
  shift 2
  while ipt -C "$from" "$@" -j "$to" 2>/dev/null; do
    ipt -D "$from" "$@" -j "$to"
  done
}

# Flushes and deletes a chain if it exists.
drop_chain() {
  if ipt -n -L "$1" >/dev/null 2>&1; then
    ipt -F "$1"
    ipt -X "$1"
  fi
}

if [ "${1:-}" = remove ]; then
  bridge=${2:-docker0}
  unjump DOCKER-USER "$CHAIN" -i "$bridge"
  drop_chain "$CHAIN"
  unjump INPUT "$INPUT_CHAIN"
  drop_chain "$INPUT_CHAIN"
  exit 0
fi

bridge=${1:-docker0}
port=${2:-8080}

# DOCKER-USER is evaluated before Docker's own FORWARD rules and Docker never
# edits it; dockerd creates it when it starts (hence After=docker.service).
# Docker's experimental nftables backend has no DOCKER-USER: fail loudly
# rather than run builds unprotected (kgd-runner.service Requires= us).
if ! ipt -n -L DOCKER-USER >/dev/null 2>&1; then
  echo "build-firewall: no DOCKER-USER chain (is dockerd running with iptables?)" >&2
  exit 1
fi

# Our rules live in their own chain, rebuilt on every run, so running the
# script again never duplicates them.
ipt -N "$CHAIN" 2>/dev/null || ipt -F "$CHAIN"
# 169.254.169.254 is also the VPC's DNS resolver, and containers on the
# default bridge use the host's resolv.conf: let DNS through, or every
# build that resolves a name (apt-get, go mod download, npm ...) breaks.
ipt -A "$CHAIN" -d 169.254.169.254 -p udp --dport 53 -j RETURN
ipt -A "$CHAIN" -d 169.254.169.254 -p tcp --dport 53 -j RETURN
# Everything else to the metadata server (its HTTP API on port 80 hands out
# the service account's access tokens) is refused outright; REJECT rather
# than DROP so a build fails fast instead of hanging on timeouts.
ipt -A "$CHAIN" -d 169.254.169.254 -j REJECT

# Exactly one jump, first in DOCKER-USER, so no other rule put there can
# ACCEPT build traffic before ours sees it.
want="-A DOCKER-USER -i $bridge -j $CHAIN"
first=$(ipt -S DOCKER-USER | sed -n 2p)
count=$(ipt -S DOCKER-USER | grep -cxF -e "$want" || true)
if [ "$first" != "$want" ] || [ "$count" -ne 1 ]; then
  unjump DOCKER-USER "$CHAIN" -i "$bridge"
  ipt -I DOCKER-USER 1 -i "$bridge" -j "$CHAIN"
fi

# COS drops inbound traffic by default. The runner serves its health check
# on the host network, and without this rule the load balancer's probes
# never arrive and auto-healing recreates the VM over and over. (The VPC
# firewall rule kgd-runner-health-check limits the sources to Google's
# health checkers.)
ipt -N "$INPUT_CHAIN" 2>/dev/null || ipt -F "$INPUT_CHAIN"
ipt -A "$INPUT_CHAIN" -p tcp --dport "$port" -j ACCEPT
if ! ipt -C INPUT -j "$INPUT_CHAIN" 2>/dev/null; then
  ipt -I INPUT 1 -j "$INPUT_CHAIN"
fi
