#!/usr/bin/env bash
# Start Omnikube on this machine: one worker per visible GPU (or, with no GPU or no model weights,
# N simulated workers), wait until every worker is healthy, then the gateway in front of them.
# Prints the URL and the log and PID paths (all under tmp/). `scripts/stop-local.sh` stops exactly
# the processes started here.
#
#   scripts/run-local.sh [--http] [--simulated N] [gateway flags...]
#   OMNIKUBE_SIM_WORKERS=N   simulated workers when no GPU/weights (default 2)
#   OMNIKUBE_RUN_DIR=DIR     where logs and PID files go (default tmp/)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
RUN=${OMNIKUBE_RUN_DIR:-tmp}
mkdir -p "$RUN"
PIDS="$RUN/omnikube-local.pids"

if [ -s "$PIDS" ]; then
  while read -r pid _; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "Omnikube is already running here (PID $pid from $PIDS). Stop it first: scripts/stop-local.sh" >&2
      exit 1
    fi
  done < "$PIDS"
fi
: > "$PIDS"

SIMULATED=""
SCHEME=https
GATEWAY_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --simulated) SIMULATED="$2"; shift 2 ;;
    --http) SCHEME=http; GATEWAY_ARGS+=("$1"); shift ;;
    *) GATEWAY_ARGS+=("$1"); shift ;;
  esac
done

read -r BASE_PORT GATEWAY_PORT MODEL_PATH < <("$PY" -c '
from omnikube.config import load_config
c = load_config()
print(c.service.worker_base_port, c.service.gateway_port, c.model.model_path)')
for ((i = 0; i < ${#GATEWAY_ARGS[@]}; i++)); do
  [ "${GATEWAY_ARGS[$i]}" = "--port" ] && GATEWAY_PORT="${GATEWAY_ARGS[$((i + 1))]}"
done

# One worker per visible GPU, if the model can really run here.
GPUS=0
if [ -z "$SIMULATED" ] && command -v nvidia-smi >/dev/null 2>&1; then
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a VISIBLE <<< "$CUDA_VISIBLE_DEVICES"
    GPUS=${#VISIBLE[@]}
  else
    GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    VISIBLE=($(seq 0 $((GPUS - 1))))
  fi
fi
WEIGHTS=no
if [ -d "$MODEL_PATH" ] || "$PY" -c 'import torch, transformers' >/dev/null 2>&1; then
  WEIGHTS=yes
fi

if [ "$GPUS" -gt 0 ] && [ "$WEIGHTS" = yes ] && [ -z "$SIMULATED" ]; then
  BACKEND=minicpmo
  COUNT=$GPUS
  WAIT_S=1800
else
  BACKEND=simulated
  COUNT=${SIMULATED:-${OMNIKUBE_SIM_WORKERS:-2}}
  WAIT_S=120
  echo "################################################################################"
  echo "#  NO GPU OR NO MODEL WEIGHTS (gpus=$GPUS, model stack=$WEIGHTS):"
  echo "#  starting $COUNT SIMULATED workers. Every answer says it is simulated;"
  echo "#  nothing here runs MiniCPM-o."
  echo "################################################################################"
fi

WORKERS=()
for ((i = 0; i < COUNT; i++)); do
  port=$((BASE_PORT + i))
  log="$RUN/worker_$i.log"
  if [ "$BACKEND" = minicpmo ]; then
    CUDA_VISIBLE_DEVICES="${VISIBLE[$i]}" nohup "$VENV/bin/omnikube-worker" --backend minicpmo --worker-index "$i" \
      --gpu-id "$i" --port "$port" --host 127.0.0.1 > "$log" 2>&1 &
  else
    nohup "$VENV/bin/omnikube-worker" --backend simulated --worker-index "$i" --port "$port" --host 127.0.0.1 > "$log" 2>&1 &
  fi
  echo "$!" > "$RUN/worker_$i.pid"
  echo "$! worker_$i" >> "$PIDS"
  WORKERS+=("localhost:$port")
done

echo "Waiting for ${COUNT} worker(s) to report idle (up to ${WAIT_S}s)..."
"$PY" - "$WAIT_S" "${WORKERS[@]}" <<'PYEOF'
import sys, time, httpx
deadline = time.monotonic() + float(sys.argv[1])
pending = set(sys.argv[2:])
while pending and time.monotonic() < deadline:
    for address in list(pending):
        try:
            if httpx.get(f"http://{address}/health", timeout=2).json().get("worker_status") == "idle":
                pending.discard(address)
                print(f"  {address} healthy")
        except (httpx.HTTPError, ValueError):
            pass
    time.sleep(0.5)
if pending:
    sys.exit(f"workers not healthy in time: {', '.join(sorted(pending))} (see tmp/worker_*.log)")
PYEOF

JOINED=$(IFS=,; echo "${WORKERS[*]}")
nohup "$VENV/bin/omnikube-gateway" --workers "$JOINED" --port "$GATEWAY_PORT" "${GATEWAY_ARGS[@]}" > "$RUN/gateway.log" 2>&1 &
echo "$!" > "$RUN/gateway.pid"
echo "$! gateway" >> "$PIDS"

"$PY" - "$SCHEME" "$GATEWAY_PORT" <<'PYEOF'
import sys, time, httpx
url = f"{sys.argv[1]}://127.0.0.1:{sys.argv[2]}/healthz"
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        if httpx.get(url, verify=False, timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
sys.exit("gateway did not come up (see tmp/gateway.log)")
PYEOF

echo
echo "Omnikube is up ($BACKEND backend, $COUNT worker(s))."
echo "  URL:      $SCHEME://localhost:$GATEWAY_PORT/"
[ "$SCHEME" = https ] && echo "            (self-signed certificate: accept it in the browser once)"
echo "  Logs:     $RUN/gateway.log, $RUN/worker_*.log"
echo "  PIDs:     $RUN/gateway.pid, $RUN/worker_*.pid (all in $PIDS)"
echo "  Stop:     scripts/stop-local.sh   (or: make stop)"
