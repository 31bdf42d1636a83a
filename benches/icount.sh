#!/usr/bin/env bash
# Instructions per request of one layer case, by callgrind: the layer's
# example app run twice (LO and HI requests), the difference divided by the
# extra requests, with and without the layer. Deterministic, so a change of
# a few instructions shows where wall-clock benches are noise.
#
#   cargo build --release -p portcullis-benches --example icount
#   benches/icount.sh <session|jwt|csrf-signed|csrf-session> <case> [binary]
set -euo pipefail
layer=$1 case=$2
bin=${3:-$(dirname "$0")/../target/release/examples/icount}
lo=${LO:-200} hi=${HI:-1200}
command -v valgrind >/dev/null || { echo "valgrind is missing (Debian: apt-get install valgrind)" >&2; exit 1; }
per_request() {
  local out; out=$(mktemp -d)
  for n in $lo $hi; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$n" "$bin" "$1" "$case" "$n" >/dev/null 2>&1
  done
  local a b
  a=$(grep -E '^(summary|totals):' "$out/$lo" | head -1 | awk '{print $2}')
  b=$(grep -E '^(summary|totals):' "$out/$hi" | head -1 | awk '{print $2}')
  rm -rf "$out"
  echo $(( (b - a) / (hi - lo) ))
}
with=$(per_request "$layer")
without=$(per_request "$layer-base")
echo "$layer $case: $with instructions/request, $without without the layer, layer $(( with - without ))"
