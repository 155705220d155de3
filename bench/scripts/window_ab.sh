#!/usr/bin/env bash
# Plain widgets' ingest throughput, this checkout against an earlier revision, in one run:
# `window_ingest/livedash/{sum,max,p99}` (10,000 series, one second of traffic plus the
# refresh of every widget per iteration) built from both, run alternately ROUNDS times,
# and the median throughput of each reported with their ratio.
#   bash bench/scripts/window_ab.sh <revision> [rounds]
set -euo pipefail
rev=${1:?usage: window_ab.sh <revision> [rounds]}
rounds=${2:-3}
here=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$here" worktree add --detach "$work/before" "$rev" >/dev/null
filter='window_ingest/livedash'
build() { (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench -p livedash-bench --bench window --no-run >/dev/null 2>&1); }
echo "building $rev and this checkout"
build "$work/before" "$work/target-before"
build "$here" "$work/target-now"
run() {
  # Criterion's own report: "thrpt: [low mid high]" per benchmark; the middle figure.
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench -p livedash-bench --bench window -- "$filter" 2>/dev/null) |
    awk '/^window_ingest\/livedash\//{name=$1} /thrpt:.*elem\/s/{print name, $(NF-3), $(NF-2)}'
}
for round in $(seq 1 "$rounds"); do
  run "$work/before" "$work/target-before" | sed "s/^/before $round /"
  run "$here" "$work/target-now" | sed "s/^/now $round /"
done | tee "$work/all.txt"
echo
echo "median throughput over $rounds rounds (Melem/s):"
for agg in sum max p99; do
  med() { grep "^$1 .* window_ingest/livedash/$agg " "$work/all.txt" | awk '{v=$4; if ($5=="Kelem/s") v/=1000; if ($5=="Gelem/s") v*=1000; print v}' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
  b=$(med before); n=$(med now)
  awk -v a="$agg" -v b="$b" -v n="$n" 'BEGIN{printf "  %-4s before %.3f, now %.3f: %.3fx\n", a, b, n, n/b}'
done
