#!/usr/bin/env bash
# Times builds of the `hop` binary (dev profile) in one checkout, for comparing two commits on
# the same machine: a clean build from an empty target directory (dependencies included), a clean
# build of Hop's own crates with the dependencies already built, three rebuilds after touching
# one node-agent file, and three rebuilds after editing a log message inside a function body of
# that file. Usage: bench/scripts/build-times.sh CHECKOUT FILE LABEL
#   FILE: the node agent's session code in that checkout (appliance/agent/src/node/session.rs
#   since the house split; appliance/src/node/session.rs before it).
# Uses its own target directory (/work/.cache/tgt-buildtime-LABEL, or $BUILD_TIMES_DIR/LABEL).
set -euo pipefail
wt=$1; file=$2; label=$3
export CARGO_TARGET_DIR="${BUILD_TIMES_DIR:-/work/.cache/tgt-buildtime}-$label" CARGO_TERM_COLOR=never
cd "$wt"
rm -rf "$CARGO_TARGET_DIR"
timed() { # timed WHAT: runs `cargo build -p hop` and prints the seconds it took
  local t0 t1; t0=$(date +%s.%N); cargo build -p hop --locked -q; t1=$(date +%s.%N)
  printf '%s %s: %.1f s\n' "$label" "$1" "$(echo "$t1 - $t0" | bc)"
}
timed "clean build (empty target dir, deps included)"
pkgs=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(" ".join("-p "+p["name"] for p in json.load(sys.stdin)["packages"]))')
# shellcheck disable=SC2086 # one word per package flag
cargo clean $pkgs -q
timed "clean build of Hop's own crates (dependencies built)"
for i in 1 2 3; do touch "$file"; timed "rebuild after touching $file (run $i)"; done
for i in 1 2 3; do
  if grep -q 'the node does not record it' "$file"; then
    sed -i 's/the node does not record it/the node does not keep it/' "$file"
  else
    sed -i 's/the node does not keep it/the node does not record it/' "$file"
  fi
  timed "rebuild after editing a log message in $file (run $i)"
done
git checkout -- "$file"
