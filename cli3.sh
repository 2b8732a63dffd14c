export OMP_NUM_THREADS=1 PYTHONPATH=/tmp/audit-serve
run() { echo "== $*"; start=$(date +%s); timeout 60 /tmp/avenv/bin/python -m audiotok serve --state /tmp/aud/run/cli-state "$@" > /tmp/aud/run/cli.out 2>&1; echo "rc=$? secs=$(( $(date +%s)-start ))"; grep -v "transformers\]" /tmp/aud/run/cli.out | tail -${N:-5} | cut -c1-250; }
run --port 18731 --rollout tiny:tiny-v2=0.1
run --port 18741
run --port 18741 --grpc-port 18743
run --port 18731 --grpc-port 18742
