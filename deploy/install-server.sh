#!/usr/bin/env bash
# Install noco-server on this host as a systemd service, initialize its data directory, and
# put the first admin's credential where nococtl finds it for root.
#
#   deploy/install-server.sh --san noco.example.com [--san 10.0.0.5] [--binary ./noco-server]
set -euo pipefail

sans=() binary="$(dirname "$0")/../target/release/noco-server"
while [[ $# -gt 0 ]]; do
  case $1 in
    --san) sans+=(--san "$2"); shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ ${#sans[@]} -gt 0 ]] || { echo "usage: $0 --san NAME [--san NAME...] [--binary PATH]" >&2; exit 2; }
[[ -x $binary ]] || { echo "no server binary at $binary (build with cargo build --release, or pass --binary)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root" >&2; exit 2; }

install -m 0755 "$binary" /usr/local/bin/noco-server
install -m 0644 "$(dirname "$0")/systemd/noco-server.service" /etc/systemd/system/noco-server.service
if [[ ! -f /var/lib/noco-server/ca.crt ]]; then
  /usr/local/bin/noco-server init --data-dir /var/lib/noco-server "${sans[@]}"
  install -d -m 0700 /root/.config/noco
  install -m 0600 /var/lib/noco-server/admin.nococtl.toml /root/.config/noco/config.toml
fi
systemctl daemon-reload
systemctl enable --now noco-server.service
systemctl --no-pager status noco-server.service || true
