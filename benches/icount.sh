#!/usr/bin/env bash
# Instructions per request of one layer case, by callgrind: the layer's
# example app run twice (LO and HI requests), the difference divided by the
# extra requests, with and without the layer. Deterministic, so a change of
# a few instructions shows where wall-clock benches are noise.
#
#   cargo build --release -p portcullis-benches --example icount
#   benches/icount.sh <session|jwt|csrf-signed|csrf-session> <case> [binary]
#
# The cost of observability (a session read, an HS256 JWT check with the
# cache): each with events off, on, and without the layer:
#
#   benches/icount.sh observability [binary]
set -euo pipefail
if [ "$1" = observability ]; then
  bin=${2:-$(dirname "$0")/../target/release/examples/icount}
else
  layer=$1 case=$2
  bin=${3:-$(dirname "$0")/../target/release/examples/icount}
fi
lo=${LO:-200} hi=${HI:-1200}
command -v valgrind >/dev/null || { echo "valgrind is missing (Debian: apt-get install valgrind)" >&2; exit 1; }
# per_request <layer> [case]: instructions per request.
per_request() {
  local out; out=$(mktemp -d)
  for n in $lo $hi; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$n" "$bin" "$1" "${2:-$case}" "$n" >/dev/null 2>&1
  done
  local a b
  a=$(grep -E '^(summary|totals):' "$out/$lo" | head -1 | awk '{print $2}')
  b=$(grep -E '^(summary|totals):' "$out/$hi" | head -1 | awk '{print $2}')
  rm -rf "$out"
  echo $(( (b - a) / (hi - lo) ))
}
if [ "$1" = observability ]; then
  for l in session jwt; do
    off=$(per_request "obs-$l" off)
    on=$(per_request "obs-$l" on)
    base=$(per_request "obs-$l" base)
    awk -v l="$l" -v off="$off" -v on="$on" -v base="$base" 'BEGIN {
      printf "%s: events off %d, on %d instructions/request (on/off %.4f, +%d); without the layer %d\n",
        l, off, on, on / off, on - off, base }'
  done
  exit 0
fi
with=$(per_request "$layer")
without=$(per_request "$layer-base")
echo "$layer $case: $with instructions/request, $without without the layer, layer $(( with - without ))"
