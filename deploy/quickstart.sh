#!/usr/bin/env bash
# noco on one machine: a server and a local agent on the embedded default (sled under
# .noco-dev/), enrolled through the real join-token flow; then an example stack
# (deploy/example/compose.yaml) deployed through the server, ending with `nococtl status`
# showing it healthy and `nococtl logs` showing its containers' newest lines. No registry is needed: the example image is built locally.
#
#   deploy/quickstart.sh          build, start (or restart) both, show the fleet
#   deploy/quickstart.sh stop     stop both (data stays in .noco-dev/)
#   deploy/quickstart.sh clean    stop both, remove every stack the local agent ran (containers,
#                                 networks, volumes of each compose project), delete .noco-dev/
#
# Environment: NOCO_DEV_DIR (default .noco-dev), NOCO_DEV_PORT (default 7443),
# NOCO_DEV_PROFILE (debug or release, default debug).
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=${NOCO_DEV_DIR:-$PWD/.noco-dev}
PORT=${NOCO_DEV_PORT:-7443}
PROFILE=${NOCO_DEV_PROFILE:-debug}
URL="https://127.0.0.1:$PORT"
BIN=target/$PROFILE

stop() {
  for name in agent server; do
    if [[ -f $DIR/$name.pid ]]; then
      pid=$(cat "$DIR/$name.pid")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$DIR/$name.pid"
    fi
  done
}

case "${1:-up}" in
  stop) stop; echo "stopped (data kept in $DIR)"; exit 0 ;;
  clean)
    stop
    # The agent keeps a directory per stack it runs (<data-dir>/stacks/<stack>), until it has
    # removed the stack; the stack's compose project on this host has the stack's name.
    if [[ -d $DIR/agent/stacks ]]; then
      for stack_dir in "$DIR"/agent/stacks/*/; do
        [[ -d $stack_dir ]] || continue
        project=$(basename "$stack_dir")
        if [[ -x $BIN/noco-agent ]] && "$BIN/noco-agent" compose down -p "$project" --volumes >/dev/null 2>&1; then
          echo "removed stack $project"
        else
          echo "could not remove stack $project: run noco-agent compose down -p $project --volumes" >&2
        fi
      done
    fi
    rm -rf "$DIR"; echo "removed $DIR"; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|stop|clean]" >&2; exit 2 ;;
esac

if [[ $PROFILE == release ]]; then
  cargo build --release -p noco-server -p noco-agent -p nococtl
else
  cargo build -p noco-server -p noco-agent -p nococtl
fi
stop
mkdir -p "$DIR"

if [[ ! -f $DIR/server/ca.crt ]]; then
  "$BIN/noco-server" init --data-dir "$DIR/server" --san 127.0.0.1 --san localhost --server-url "$URL"
fi
export NOCO_CONFIG=$DIR/server/admin.nococtl.toml

"$BIN/noco-server" run --data-dir "$DIR/server" --listen "127.0.0.1:$PORT" >"$DIR/server.log" 2>&1 &
echo $! >"$DIR/server.pid"
for _ in $(seq 1 100); do
  grep -q "noco-server listening" "$DIR/server.log" && break
  kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
  sleep 0.1
done

if [[ ! -f $DIR/agent/credential.toml ]]; then
  token=$("$BIN/nococtl" token create --labels role=dev --ttl 10m 2>/dev/null)
  "$BIN/noco-agent" enroll --server "$URL" --token "$token" --data-dir "$DIR/agent" --name local-1
fi
"$BIN/noco-agent" run --data-dir "$DIR/agent" >"$DIR/agent.log" 2>&1 &
echo $! >"$DIR/agent.pid"

online=""
for _ in $(seq 1 100); do
  if "$BIN/nococtl" host ls -o json 2>/dev/null | grep -q '"status": "online"'; then online=yes; break; fi
  sleep 0.1
done
"$BIN/nococtl" host ls
if [[ -z $online ]]; then
  echo "the agent did not come online; see $DIR/agent.log and $DIR/server.log" >&2
  exit 1
fi

# The example image: the static test workload alone in a FROM scratch image, built locally.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/testapp \
  cargo build --quiet --release -p noco-testapp
ctx=$(mktemp -d)
cp target/testapp/release/noco-testapp "$ctx/"
printf 'FROM scratch\nCOPY noco-testapp /noco-testapp\nEXPOSE 8080\nENTRYPOINT ["/noco-testapp"]\n' >"$ctx/Dockerfile"
if ! DOCKER_BUILDKIT=0 docker build --quiet -t noco-example:latest "$ctx" >"$DIR/image-build.log" 2>&1; then
  cat "$DIR/image-build.log" >&2
  exit 1
fi
rm -rf "$ctx"

"$BIN/nococtl" stack apply example -f deploy/example/compose.yaml --selector role=dev
"$BIN/nococtl" status example --watch --timeout 3m >/dev/null
"$BIN/nococtl" status
# The containers' logs reach the server from the agent: show the newest lines.
logs=""
for _ in $(seq 1 40); do
  logs=$("$BIN/nococtl" logs example --tail 3 2>/dev/null || true)
  [ -n "$logs" ] && break
  sleep 0.25
done
if [ -z "$logs" ]; then
  echo "no container logs reached the server; see $DIR/agent.log and $DIR/server.log" >&2
  exit 1
fi
echo "$logs"
cat <<MSG

noco is up: server on $URL, agent local-1 online, stack "example" healthy.
Logs: $DIR/server.log, $DIR/agent.log
  export NOCO_CONFIG=$DIR/server/admin.nococtl.toml
  $BIN/nococtl host ls         # the fleet
  $BIN/nococtl stack ls        # stacks and where they run
  $BIN/nococtl logs example -f # its containers' logs, live
  $BIN/nococtl top             # hosts' CPU, memory, disks (--stack example: its containers)
  $BIN/nococtl audit           # who did what
  deploy/quickstart.sh stop    # stop both
MSG
