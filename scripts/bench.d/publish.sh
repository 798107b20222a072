#!/usr/bin/env bash
# tuftool create publishing a 1 GiB target, against `sha256sum FILE && cp
# FILE DIR` on the same file in the same run: best wall time of 3, the
# ratio, and peak memory. Target: ratio <= 1.0, our peak < 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/time ]; then
  echo "bench publish: GNU time missing (make tools installs it); skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
size_mib=${PUBLISH_BENCH_MIB:-1024}
mkdir "$dir/targets"
head -c $((size_mib << 20)) /dev/urandom >"$dir/targets/root.img"
t=bin/tuftool
$t gen-key --type ed25519 --out "$dir/k.pem" >/dev/null
$t root init "$dir/root.json"
$t root add-key "$dir/root.json" -k "$dir/k.pem" --role root --role targets --role snapshot --role timestamp >/dev/null
$t root sign "$dir/root.json" -k "$dir/k.pem"

best() { # best wall seconds and max RSS KiB of 3 runs of: setup-cmd ; cmd...
  local setup=$1; shift
  local b="" rss=0
  for _ in 1 2 3; do
    eval "$setup"
    /usr/bin/time -f '%e %M' -o "$dir/t" "$@" >/dev/null 2>"$dir/err" || { cat "$dir/err"; exit 1; }
    read -r s k <"$dir/t"
    if [ -z "$b" ] || awk "BEGIN{exit !($s < $b)}"; then b=$s; fi
    [ "$k" -gt "$rss" ] && rss=$k
  done
  echo "$b $rss"
}
read -r ours_s ours_k < <(best 'rm -rf "$dir/repo"' $t create --root "$dir/root.json" -k "$dir/k.pem" --add-targets "$dir/targets" --outdir "$dir/repo")
read -r ref_s ref_k < <(best 'rm -rf "$dir/copy"; mkdir "$dir/copy"' sh -c "sha256sum '$dir/targets/root.img' && cp '$dir/targets/root.img' '$dir/copy/'")
awk -v mib="$size_mib" -v os="$ours_s" -v ok="$ours_k" -v rs="$ref_s" -v rk="$ref_k" 'BEGIN{
  printf "bench publish %d MiB target: tuftool create %.2fs (peak %.1f MiB)  sha256sum+cp %.2fs (peak %.1f MiB)  ratio (ours/theirs) %.2f\n",
    mib, os, ok/1024, rs, rk/1024, os/rs }'
