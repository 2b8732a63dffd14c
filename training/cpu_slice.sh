#!/usr/bin/env bash
# The background CPU training slice of the default codec, for a whole working session.
#
#   training/cpu_slice.sh start [MINUTES]   train at the lowest priority from training/state
#                                           (default: until stopped; 170 minutes at most)
#   training/cpu_slice.sh pause | resume    SIGSTOP / SIGCONT, around benchmarks
#   training/cpu_slice.sh stop              SIGTERM: the step in progress ends, then the
#                                           checkpoint, validation, training/state.safetensors
#                                           and a training/history.jsonl line; waits for it
#   training/cpu_slice.sh status            running or not, and the last log lines
#
# Needs training/subset/ (audiotok make-subset) and audiotok installed. The run directory
# (RUN, default /tmp/audiotok-cpu-slice) keeps full checkpoints between starts of one session.
#
# An ablation arm beside it: its own RUN and STATE (a copy of training/'s state.safetensors and
# history.jsonl), config overrides in SETS and a NOTE, e.g.
#   RUN=/tmp/arm-b STATE=/tmp/arm-b/state SETS="losses.mel=1 losses.logmel=1" \
#     NOTE="cpu ablation: logmel" training/cpu_slice.sh start 100
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-/tmp/audiotok-cpu-slice}
PIDFILE=$RUN/pid
LOG=$RUN/stderr.txt
BATCH=${BATCH:-16}
# One thread: two OpenMP pools on two cores (the trainer's and a test run's or a benchmark's)
# spin against each other and both crawl (measured: a benchmark ran 20x slower beside a
# 2-thread trainer, even at nice 19). THREADS=2 for a machine left alone.
THREADS=${THREADS:-1}
STATE=${STATE:-training}
# A bigger subset than the GPU slice's (same validation crops), where this machine has one:
#   audiotok make-subset configs/audiotok_24khz.json -o SUBSET --manifest M \
#       --seconds speech 10000 --seconds music 14000 --seconds sfx 6000
SUBSET=${SUBSET:-}
NOTE=${NOTE:-cpu background slice}
sets=()
# bf16 training steps where the CPU has AMX (oneDNN's bf16 matrix unit): 0.70 of float32's time
# per step and validation as good per step (docs/TRAINING.md, ablation of 2026-12-07). Without
# AMX untimed: float32. PRECISION=fp32 (or a precision= in SETS) overrides.
if [ -n "${PRECISION:-}" ]; then
  sets+=(--set "precision=$PRECISION")
elif grep -q amx_bf16 /proc/cpuinfo 2>/dev/null; then
  sets+=(--set precision=bf16)
fi
# A CPU slice is 100-250 steps: re-warming Adam over the recipe's 100 (optim.rewarm_steps)
# kept most of it below the peak rate (a mean of 7e-6 against 3e-5 on 2026-12-07); its moments
# (betas 0.5, 0.9) settle in 10-20 steps. REWARM, or a rewarm_steps in SETS, overrides it.
sets+=(--set "optim.rewarm_steps=${REWARM:-20}")
for field in ${SETS:-}; do sets+=(--set "$field"); done
if [ -n "$SUBSET" ]; then sets+=(--subset "$SUBSET"); fi

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-status}" in
  start)
    if running; then echo "already running (pid $(cat "$PIDFILE"))"; exit 0; fi
    mkdir -p "$RUN"
    minutes=${2:-170}
    offset=$(($(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1))
    # setsid: the trainer outlives this shell, in its own scheduler autogroup, where nice only
    # ranks it against its own threads; the group's nice value is what makes it yield to tests
    # and benchmarks (measured: a test run beside two trainers at plain nice 19 took 3.5x as
    # long). The group is set from inside the new session, after setsid() made it: written
    # from here it raced setsid and reniced this shell's group instead (a test of 2 s idle then
    # ran two hours beside two trainers).
    setsid sh -c 'echo 19 > /proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"' trainer \
      audiotok train configs/audiotok_24khz.json -o "$RUN/run" --state "$STATE" \
      --batch-size "$BATCH" --threads "$THREADS" --minutes "$minutes" "${sets[@]}" \
      --note "$NOTE" >>"$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    echo "started (pid $!), log $LOG"
    # Loading the subset and the state takes minutes at nice 19, and a state that does not
    # fit fails only then: wait for the trainer's "training from step N" or its error.
    for _ in $(seq 300); do
      if tail -c "+$offset" "$LOG" | grep -q "^training from step"; then
        tail -c "+$offset" "$LOG" | grep "^training from step"; exit 0
      fi
      if ! running; then echo "the trainer stopped:" >&2; tail -c "+$offset" "$LOG" >&2; exit 1; fi
      sleep 2
    done
    echo "still loading after 10 minutes; see $LOG"
    ;;
  pause) running && kill -STOP "$(cat "$PIDFILE")" && echo paused ;;
  resume) running && kill -CONT "$(cat "$PIDFILE")" && echo resumed ;;
  stop)
    if ! running; then echo "not running"; exit 0; fi
    pid=$(cat "$PIDFILE")
    kill -CONT "$pid"; kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 2; done
    tail -n 2 "$LOG"
    ;;
  status)
    if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not running"; fi
    [ -f "$LOG" ] && tail -n 3 "$LOG"
    ;;
  *) echo "usage: $0 start [MINUTES] | pause | resume | stop | status" >&2; exit 2 ;;
esac
