#!/usr/bin/env bash
# launch-example.sh: run a torchrun job with ugro-health tracking it.
#
#   JOB=llama NODES=gpu1,gpu2 RANKS=8 contrib/launch-example.sh --epochs 3
#
# While the job runs, a `ugro-health watch` on the control host polls its nodes every 5 s and
# checks that RANKS training processes are alive on each. The job is finished when torchrun
# exits, and also when this script is interrupted (Ctrl-C) or terminated (SIGTERM, SIGHUP: the
# signal is passed on to torchrun first). If the script is killed outright (SIGKILL), the --ttl
# and watch's grace period after the processes disappear finish the job instead.
#
# This starts torchrun on this node only; on a multi-node job start it the same way on every
# node (srun, pdsh, ...), with the same rendezvous endpoint.

set -uo pipefail

JOB=${JOB:-train-$(date +%Y%m%d-%H%M%S)}  # letters, digits, '.', '_', '-'
NODES=${NODES:-gpu1,gpu2}                  # node names from cluster.yaml, comma-separated
RANKS=${RANKS:-8}                          # training processes per node (GPUs per node)
TTL=${TTL:-2d}                             # finish the job after this even if never told
RDZV=${RDZV:-${NODES%%,*}:29500}           # rendezvous endpoint: the first node
SCRIPT=${SCRIPT:-train.py}

nnodes=$(($(tr -cd , <<<"$NODES" | wc -c) + 1))

# exit 3 (UNKNOWN) with one line if the job is already active or a node is not configured
ugro-health jobs start "$JOB" --nodes "$NODES" --ranks "$RANKS" --ttl "$TTL" || exit

child=
finish() {
    ugro-health jobs finish "$JOB" >/dev/null || true
}
on_signal() {
    local sig=$1
    trap - "$sig" EXIT
    # Background commands ignore SIGINT in scripts, so torchrun is asked to stop with SIGTERM.
    if [[ -n $child ]]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child"
    fi
    finish
    kill -"$sig" "$$"  # die of the same signal, so our caller sees why
}
trap finish EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# In the background, so that `wait` returns as soon as a signal arrives.
torchrun --nnodes "$nnodes" --nproc-per-node "$RANKS" \
    --rdzv-backend c10d --rdzv-endpoint "$RDZV" --rdzv-id "$JOB" \
    "$SCRIPT" "$@" &
child=$!
wait "$child"
rc=$?

trap - EXIT
finish
exit "$rc"
