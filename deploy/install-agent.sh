#!/usr/bin/env bash
# Install noco-agent on this host as a systemd service and enroll it.
#
#   deploy/install-agent.sh --server https://noco.example.com:7443 --token TOKEN \
#       [--name web-1] [--binary ./noco-agent]
set -euo pipefail

server="" token="" name="" binary="$(dirname "$0")/../target/release/noco-agent"
while [[ $# -gt 0 ]]; do
  case $1 in
    --server) server=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -n $server && -n $token ]] || { echo "usage: $0 --server URL --token TOKEN [--name NAME] [--binary PATH]" >&2; exit 2; }
[[ -x $binary ]] || { echo "no agent binary at $binary (build with cargo build --release, or pass --binary)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root: the agent manages Docker and systemd" >&2; exit 2; }

install -m 0755 "$binary" /usr/local/bin/noco-agent
install -m 0644 "$(dirname "$0")/systemd/noco-agent.service" /etc/systemd/system/noco-agent.service
install -d -m 0700 /var/lib/noco-agent
args=(enroll --server "$server" --token "$token" --data-dir /var/lib/noco-agent)
[[ -n $name ]] && args+=(--name "$name")
/usr/local/bin/noco-agent "${args[@]}"
systemctl daemon-reload
systemctl enable --now noco-agent.service
systemctl --no-pager status noco-agent.service || true
