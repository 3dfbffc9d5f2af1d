#!/usr/bin/env bash
# `make serve`: a local Prefect server (SQLite) and a worker of the `fcnseg` process pool, with the
# deployments of deploy/prefect.yaml registered. Ctrl-C stops the worker, then the server.
#   PREFECT_PORT (4200)  PREFECT_HOME (.prefect in the repo)  FCNSEG_SERVE_UI (true)
set -m  # the worker must not inherit SIGINT as ignored (it would hang on shutdown)
set -euo pipefail
cd "$(dirname "$0")/.."

port="${PREFECT_PORT:-4200}"
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:${port}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export PREFECT_SERVER_UI_ENABLED="${FCNSEG_SERVE_UI:-true}"
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-2}"
prefect="${PREFECT_BIN:-.venv/bin/prefect}"

server_pid="" worker_pid=""
# Stop PID: SIGNAL first, then SIGKILL if it is still there after SECONDS.
stop_process() {
  local pid="$1" signal="$2" seconds="$3"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
stop() {
  trap - EXIT INT TERM
  # the worker first (it must not lose its server mid-shutdown), by TERM: started in the background of
  # this non-interactive shell, it ignores INT (POSIX), so INT only ran out the 20 s before a KILL
  stop_process "$worker_pid" TERM 20
  stop_process "$server_pid" TERM 20
  echo "fcnseg serve: stopped"
}
trap stop EXIT INT TERM

mkdir -p "$PREFECT_HOME"
"$prefect" server start --host 127.0.0.1 --port "$port" > "$PREFECT_HOME/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 120); do
  curl -sf "$PREFECT_API_URL/health" > /dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { echo "fcnseg serve: the server did not start (see $PREFECT_HOME/server.log)" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$PREFECT_API_URL/health" > /dev/null || { echo "fcnseg serve: server not healthy after 60 s" >&2; exit 1; }

"$prefect" work-pool inspect fcnseg > /dev/null 2>&1 || "$prefect" work-pool create fcnseg --type process > /dev/null
"$prefect" --no-prompt deploy --all --prefect-file deploy/prefect.yaml > "$PREFECT_HOME/deploy.log" 2>&1 \
  || { cat "$PREFECT_HOME/deploy.log" >&2; exit 1; }
mkdir -p incoming outputs

"$prefect" worker start --pool fcnseg > "$PREFECT_HOME/worker.log" 2>&1 &
worker_pid=$!
cat <<MSG
fcnseg serve: ready (server $PREFECT_API_URL, worker pid $worker_pid, logs in $PREFECT_HOME)
  deployments: segment-scene/nightly (02:00 UTC), segment-scene/on-demand, train-fcn/retrain
  put scenes in ./incoming, then in another shell:
    export PREFECT_API_URL=$PREFECT_API_URL
    .venv/bin/prefect deployment run segment-scene/nightly --watch
    .venv/bin/prefect deployment run segment-scene/on-demand --param inputs=PATH --param output_root=DIR --watch
      (fcnseg segment's options: --param 'options={"tile": 1024, "stitch": "blend"}')
    .venv/bin/prefect deployment run train-fcn/retrain --param 'request={"image": "I.tif", "labels": "L.tif", "out": "M.safetensors"}' --watch
  Ctrl-C stops the worker and the server.
MSG
wait "$worker_pid"
