#!/usr/bin/env bash
# Instructions per request of each contender's app, called in-process, by
# callgrind (repeatable whatever else the machine is doing): two runs with
# different request counts, the difference divided by the extra requests.
#
#   benches/load/callgrind.sh BINARY [contender ...]
#   KEEP=dir benches/load/callgrind.sh ...   keeps the profiles of the larger runs
set -euo pipefail
bin=$1; shift
lo=${LO:-500}; hi=${HI:-2500}
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
total() {
  grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'
}
for c in "$@"; do
  for n in $lo $hi; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$c.$n.out" \
      "$bin" inproc "$c" --iters "$n" ${REDIS:+--redis "$REDIS"} >/dev/null 2>&1
  done
  a=$(total "$out/$c.$lo.out"); b=$(total "$out/$c.$hi.out")
  echo "$c $(( (b - a) / (hi - lo) )) instructions/request"
done
