#!/bin/bash
# Interleaved A/B runs of reinit builds on one model (the "interleaved runs" figures in
# docs/bench-e2e.md and README). Before each run: the output is removed and the page cache
# synced, so one run's write-back does not land in the next. Prints, per build, the median
# and minimum wall time, median user and system time (GNU time) and the peak RSS.
#
#   benches/e2e/ab.sh MODEL SCHEME REPEATS BUILD...
#   BUILD: a reinit binary, or ENV=VALUE@binary to run it with one variable set, e.g.
#   benches/e2e/ab.sh /tmp/reinit-e2e/bert_base.onnx he 8 \
#       REINIT_NO_DIRECT_IO=1@target-bench/release/reinit target-bench/release/reinit
set -euo pipefail
model=$1 scheme=$2 reps=$3
shift 3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$reps"); do
  for k in $(seq $#); do
    build=${!k}
    env=() bin=$build
    if [[ $build == *@* ]]; then env=("${build%%@*}") bin=${build#*@}; fi
    rm -f "$out/model.onnx"*; sync; sleep 0.5
    env "${env[@]}" /usr/bin/time -f "%e %U %S %M" -a -o "$out/$k.txt" \
      "$bin" "$model" --scheme "$scheme" -o "$out/model.onnx" --seed 1 --force -q
  done
done
for k in $(seq $#); do
  python3 - "${!k}" "$out/$k.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
wall, user, sys_ = ([r[i] for r in rows] for i in range(3))
print(f"{sys.argv[1]}: wall median {statistics.median(wall):.3f} s, min {min(wall):.3f} s; "
      f"user {statistics.median(user):.2f} s, sys {statistics.median(sys_):.2f} s; "
      f"peak RSS {max(r[3] for r in rows) / 1024:.0f} MiB")
PY
done
