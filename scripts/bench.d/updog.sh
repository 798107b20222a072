#!/usr/bin/env bash
# updog install benchmark: installing a 1 GiB root image from a loopback
# HTTP server into the inactive set of a disk image file, with every check
# on (TUF length and sha256 of every byte, the dm-verity check of every
# block as it is written, read-back verification before the switch),
# against the plain pipeline `curl | <decompress> | dd conv=fsync` on the
# same server and artifact in the same run. Prints wall times, the ratio
# and updog's peak memory (max RSS); then the cost of checkpointing, and
# the peak memory of a 4 GiB install.
#
# Artifacts: zstd as imgbuild writes it (independent 8 MiB frames), zstd as
# one frame (zstd -T0), lz4 (Bottlerocket's format), xz.
# BENCH_GIB=1 (image size), BENCH_4G=1 (also the 4 GiB memory run),
# BENCH_CODECS="zstd-frames zstd-single lz4 xz" (the codecs run),
# BENCH_BIN=bin (where the commands are), BENCH_KEEP=1 (keep the work
# directory: its last release, repository, updog.toml and disk image).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BENCH_BIN:-$PWD/bin}
gib=${BENCH_GIB:-1}
codecs=${BENCH_CODECS:-zstd-frames zstd-single lz4 xz}
work=$(mktemp -d /var/tmp/updog-bench.XXXXXX)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
for t in curl zstd xz lz4 bc /usr/bin/time; do command -v "$t" >/dev/null || { echo "bench: $t is missing (scripts/install-deps.sh installs it)"; exit 1; }; done
go build -o "$work/httpserve" ./internal/benchtools/httpserve
salt=$(printf 'ab%.0s' {1..32})

# A root image of real binaries and libraries: compresses like an OS image.
mkimage() { # GIB OUT
  local want=$(( $1 << 30 ))
  : > "$2"
  while [ "$(stat -c %s "$2")" -lt "$want" ]; do
    find /usr/lib /usr/bin /usr/share -type f -size +16k 2>/dev/null | sort | head -30000 | xargs cat 2>/dev/null |
      head -c $(( want - $(stat -c %s "$2") )) >> "$2" || true
  done
}

# compress CODEC IN OUT
compress() {
  case $1 in
    zstd-frames) # as imgbuild writes it: independent frames of 8 MiB of output, each with its size
      rm -rf "$work/split" && mkdir "$work/split"
      split -b 8M -a 5 "$2" "$work/split/x"
      : > "$3"
      for p in "$work/split"/x*; do zstd -q -3 -c "$p" >> "$3"; done
      rm -rf "$work/split" ;;
    zstd-single) zstd -q -T0 -3 -c "$2" > "$3" ;;
    xz) xz -T0 -3 -c "$2" > "$3" ;;
    lz4) lz4 -q -1 -c "$2" > "$3" ;;
  esac
}

prepare() { # GIB: the release images and keys
  local r=$work/release
  rm -rf "$r" && mkdir -p "$r"
  mkimage "$1" "$r/root.img"
  head -c $((1 << 20)) /dev/urandom > "$r/boot.img"
  "$bin/imgbuild" verity format --salt "$salt" --uuid 11111111-2222-4333-8444-555555555555 "$r/root.img" "$r/hash.img" > "$r/roothash"
  [ -f "$work/key.pem" ] || {
    "$bin/tuftool" gen-key --type ed25519 --out "$work/key.pem" > /dev/null
    "$bin/tuftool" root init "$work/root.json" > /dev/null
    "$bin/tuftool" root add-key "$work/root.json" -k "$work/key.pem" --role root --role targets --role snapshot --role timestamp > /dev/null
    "$bin/tuftool" root sign "$work/root.json" -k "$work/key.pem" > /dev/null
  }
}

# run CODEC DECOMPRESS [updog.toml extra line]: publish this codec's artifacts, time both, print a line
run() {
  local codec=$1 dec=$2 extra=${3:-} flags=${4:-} r=$work/release v=1.1.0
  rm -rf "$work/targets" && mkdir -p "$work/targets"
  for k in boot hash root; do compress "$codec" "$r/$k.img" "$work/targets/$k.$v"; done
  rm -f "$work/manifest.json"; "$bin/updata" init "$work/manifest.json" > /dev/null
  "$bin/updata" add-update "$work/manifest.json" --variant bench --arch x86_64 --version "$v" \
    --boot "boot.$v" --root "root.$v" --hash "hash.$v" \
    --boot-size "$(stat -c %s "$r/boot.img")" --root-size "$(stat -c %s "$r/root.img")" --hash-size "$(stat -c %s "$r/hash.img")" \
    --verity-root-hash "$(cat "$r/roothash")" --verity-salt "$salt" > /dev/null
  cp "$work/manifest.json" "$work/targets/manifest.json"
  rm -rf "$work/repo"
  "$bin/tuftool" create --root "$work/root.json" -k "$work/key.pem" --add-targets "$work/targets" --outdir "$work/repo" > /dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  rm -f "$work/url"
  "$work/httpserve" "$work/repo" > "$work/url" & server_pid=$!
  while [ ! -s "$work/url" ]; do sleep 0.05; done
  local url stored; url=$(cat "$work/url"); stored=$(cd "$work/repo/targets" && ls -- *".root.$v")
  cat > "$work/updog.toml" <<TOML
metadata_base_url = "$url/metadata"
targets_base_url = "$url/targets"
seed = 1
trusted_root = "$work/root.json"
state_dir = "$work/state"
os_release = "$work/os-release"
health_dir = "$work/health.d"
machine_id = "$work/machine-id"
$extra
TOML
  printf 'VARIANT_ID=bench\nVERSION_ID=1.0.0\n' > "$work/os-release"
  echo 00112233445566778899aabbccddeeff > "$work/machine-id"
  rm -rf "$work/state"
  local rootmib=$(( ($(stat -c %s "$r/root.img") >> 20) + 16 ))
  # Past 2.8 GiB the plan grows the HASH partitions out of the ROOT ones:
  # room for both hash trees as well.
  local hashmib=$(( ($(stat -c %s "$r/hash.img") >> 20) + 1 ))
  "$bin/imgbuild" disk --force --size "$(( 208 + 2 * (rootmib + hashmib) ))MiB" --disk-guid 11111111-2222-4333-8444-555555555555 "$work/disk.img" > /dev/null
  truncate -s 0 "$work/ref.img"; truncate -s $(( rootmib << 20 )) "$work/ref.img"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f '%e %M %U %S' -o "$work/ref.time" bash -c "curl -s '$url/targets/$stored' | $dec | dd of='$work/ref.img' bs=4M conv=fsync,notrunc status=none"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f '%e %M %U %S' -o "$work/updog.time" "$bin/updog" --config "$work/updog.toml" --disk "$work/disk.img" --active a update-image $flags > "$work/updog.out"
  read -r rt _ rus rsy < "$work/ref.time"; read -r ut um uus usy < "$work/updog.time"
  local comp; comp=$(stat -c %s "$work/targets/root.$v")
  # The mode, when not the default: a ratio is the issue's figure only
  # for the default (checkpoints on, buffered I/O).
  local mode=""
  case "$flags $extra" in
    *--no-checkpoints*) mode=" [--no-checkpoints]" ;;
    *direct_io*) mode=" [direct_io]" ;;
  esac
  printf '%-12s %d GiB (%4d MiB compressed): %-22s %6.2f s | updog %6.2f s, peak RSS %3d MiB | ratio %.2f | CPU (user+sys) %.1f s vs %.1f s%s\n' \
    "$codec" "$(( $(stat -c %s "$r/root.img") >> 30 ))" $(( comp >> 20 )) "${dec%% *} pipeline" "$rt" "$ut" $(( um / 1024 )) "$(echo "$ut / $rt" | bc -l)" \
    "$(echo "$uus + $usy" | bc -l)" "$(echo "$rus + $rsy" | bc -l)" "$mode"
  last_updog=$ut
}

want() { case " $codecs " in *" $1 "*) return 0 ;; esac; return 1; }
echo "== updog install vs curl | decompress | dd conv=fsync ($gib GiB root image, loopback HTTP, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
prepare "$gib"
if want zstd-frames; then
  run zstd-frames "zstd -dc"
  with=$last_updog
  run zstd-frames "zstd -dc" "" --no-checkpoints
  without=$last_updog
  run zstd-frames "zstd -dc"
  with2=$last_updog
  run zstd-frames "zstd -dc" "" --no-checkpoints
  without2=$last_updog
  # Best of two each: single runs vary by several percent here.
  with=$(printf '%s\n' "$with" "$with2" | sort -n | head -1)
  without=$(printf '%s\n' "$without" "$without2" | sort -n | head -1)
  printf 'checkpointing (every 2 MiB of compressed input, synced first) vs --no-checkpoints (one sync at the end), best of 2: %.2f s with, %.2f s without: %+.1f %% of the install\n' \
    "$with" "$without" "$(echo "($with - $without) * 100 / $without" | bc -l)"
fi
if want zstd-frames; then
  echo "with direct_io = true (written and read back around the page cache):"
  run zstd-frames "zstd -dc" "direct_io = true"
fi
want zstd-single && run zstd-single "zstd -dc"
want lz4 && run lz4 "lz4 -dc"
want xz && run xz "xz -dc -T0"
if [ "${BENCH_4G:-1}" = 1 ]; then
  prepare 4
  run zstd-frames "zstd -dc"
fi
