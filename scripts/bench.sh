#!/usr/bin/env bash
# Command-level benchmarks: each compares one of our commands with its
# reference tool on the same input in the same run and prints the ratio.
# Added to by the issues that set speed and memory targets.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in scripts/bench.d/*.sh; do
  [ -e "$b" ] || continue
  bash "$b"
done
