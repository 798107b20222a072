#!/usr/bin/env bash
# imgbuild verity format against veritysetup format on the same 1 GiB file,
# same parameters, in the same run: wall time (best of 3), the ratio, and
# peak memory (max RSS from GNU time). Target: ratio <= 1.0, our peak < 32 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
vs=$(command -v veritysetup || echo /usr/sbin/veritysetup)
if [ ! -x "$vs" ] || [ ! -x /usr/bin/time ]; then
  echo "bench verity: veritysetup or GNU time missing (make tools installs them); skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
size_mib=${VERITY_BENCH_MIB:-1024}
head -c $((size_mib << 20)) /dev/urandom >"$dir/data"
salt=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
uuid=11111111-2222-3333-4444-555555555555

# run NAME CMD...: best wall time in seconds and the max RSS in KiB of 3 runs
run() {
  local best="" rss=0
  for _ in 1 2 3; do
    rm -f "$dir/hash"
    sync "$dir/data"
    /usr/bin/time -f '%e %M' -o "$dir/t" "$@" >/dev/null 2>"$dir/err" || { cat "$dir/err"; exit 1; }
    read -r s k <"$dir/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s; fi
    [ "$k" -gt "$rss" ] && rss=$k
  done
  echo "$best $rss"
}

read -r ours_s ours_k < <(run bin/imgbuild verity format --salt $salt --uuid $uuid "$dir/data" "$dir/hash")
ours_root=$(bin/imgbuild verity format --salt $salt --uuid $uuid "$dir/data" "$dir/hash")
read -r vs_s vs_k < <(run "$vs" format --salt $salt --uuid $uuid "$dir/data" "$dir/hash")
vs_root=$("$vs" format --salt $salt --uuid $uuid "$dir/data" "$dir/hash" | awk '/Root hash/{print $3}')
[ "$ours_root" = "$vs_root" ] || { echo "bench verity: root hashes differ: $ours_root vs $vs_root"; exit 1; }

awk -v mib="$size_mib" -v os="$ours_s" -v ok="$ours_k" -v vs="$vs_s" -v vk="$vs_k" 'BEGIN{
  printf "bench verity format %d MiB: imgbuild %.2fs (%.0f MiB/s, peak %.1f MiB)  veritysetup %.2fs (%.0f MiB/s, peak %.1f MiB)  ratio (ours/theirs) %.2f\n",
    mib, os, mib/os, ok/1024, vs, mib/vs, vk/1024, os/vs }'
