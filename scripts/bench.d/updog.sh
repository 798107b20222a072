#!/usr/bin/env bash
# updog install benchmark: installing a 1 GiB root image (zstd, then xz and
# lz4) from a loopback HTTP server into the inactive set of a disk image
# file, with every check on (TUF length and sha256, dm-verity tree while
# writing, read-back verification before the switch), against the plain
# pipeline `curl | zstd -dc | dd conv=fsync` on the same server in the same
# run. Prints wall times, the ratio and updog's peak memory (max RSS), and
# the peak memory for a 4 GiB image.
#
# BENCH_GIB=1 (image size), BENCH_4G=1 (also the 4 GiB memory run).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/bin
gib=${BENCH_GIB:-1}
work=$(mktemp -d /var/tmp/updog-bench.XXXXXX)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for t in curl zstd xz lz4 /usr/bin/time; do command -v "$t" >/dev/null || { echo "bench: $t is missing (scripts/install-deps.sh installs it)"; exit 1; }; done
go build -o "$work/httpserve" ./internal/benchtools/httpserve

# A root image of real binaries and libraries: compresses like an OS image.
mkimage() { # SIZE_GIB OUT
  local want=$(( $1 << 30 ))
  : > "$2"
  while [ "$(stat -c %s "$2")" -lt "$want" ]; do
    find /usr/lib /usr/bin /usr/share -type f -size +16k 2>/dev/null | sort | head -30000 | xargs cat 2>/dev/null |
      head -c $(( want - $(stat -c %s "$2") )) >> "$2" || true
  done
}

# publish VERSION GIB CODEC...: images, manifest, repository; prints nothing.
publish() {
  local r=$work/release
  rm -rf "$r" && mkdir -p "$r/targets"
  mkimage "$2" "$r/root.img"
  head -c $((1 << 20)) /dev/urandom > "$r/boot.img"
  "$bin/imgbuild" verity format --salt "$(printf 'ab%.0s' {1..32})" --uuid 11111111-2222-4333-8444-555555555555 \
    "$r/root.img" "$r/hash.img" > "$r/roothash"
  "$bin/tuftool" gen-key --type ed25519 --out "$work/key.pem" > /dev/null
  "$bin/tuftool" root init "$work/root.json" --force > /dev/null
  "$bin/tuftool" root add-key "$work/root.json" -k "$work/key.pem" --role root --role targets --role snapshot --role timestamp > /dev/null
  "$bin/tuftool" root sign "$work/root.json" -k "$work/key.pem" > /dev/null
  "$bin/updata" init "$work/manifest.json" --force > /dev/null
  local v=$1; shift 2
  for codec in "$@"; do
    local ext
    case $codec in
      zstd) ext=zst; for k in boot hash root; do zstd -q -T0 -3 -c "$r/$k.img" > "$r/targets/$k.$v.$ext"; done ;;
      xz) ext=xz; for k in boot hash root; do xz -T0 -3 -c "$r/$k.img" > "$r/targets/$k.$v.$ext"; done ;;
      lz4) ext=lz4; for k in boot hash root; do lz4 -q -1 -c "$r/$k.img" > "$r/targets/$k.$v.$ext"; done ;;
    esac
  done
}

setup_disk() { # GIB
  "$bin/imgbuild" disk --force --size "$(( 208 + 2 * ($1 * 1024 + 64) ))MiB" --disk-guid 11111111-2222-4333-8444-555555555555 "$work/disk.img" > /dev/null
}

run_case() { # CODEC EXT DECOMPRESS-CMD VERSION
  local codec=$1 ext=$2 dec=$3 v=$4 r=$work/release
  rm -f "$work/manifest.json"; "$bin/updata" init "$work/manifest.json" > /dev/null
  "$bin/updata" add-update "$work/manifest.json" --variant bench --arch x86_64 --version "$v" \
    --boot "boot.$v.$ext" --root "root.$v.$ext" --hash "hash.$v.$ext" \
    --boot-size "$(stat -c %s "$r/boot.img")" --root-size "$(stat -c %s "$r/root.img")" --hash-size "$(stat -c %s "$r/hash.img")" \
    --verity-root-hash "$(cat "$r/roothash")" --verity-salt "$(printf 'ab%.0s' {1..32})" > /dev/null
  cp "$work/manifest.json" "$r/targets/manifest.json"
  rm -rf "$work/repo"
  "$bin/tuftool" create --root "$work/root.json" -k "$work/key.pem" --add-targets "$r/targets" --outdir "$work/repo" > /dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  rm -f "$work/url"
  "$work/httpserve" "$work/repo" > "$work/url" & server_pid=$!
  while [ ! -s "$work/url" ]; do sleep 0.05; done
  local url; url=$(cat "$work/url")
  local stored; stored=$(cd "$work/repo/targets" && ls -- *".root.$v.$ext")
  cat > "$work/updog.toml" <<TOML
metadata_base_url = "$url/metadata"
targets_base_url = "$url/targets"
seed = 1
trusted_root = "$work/root.json"
state_dir = "$work/state"
os_release = "$work/os-release"
health_dir = "$work/health.d"
machine_id = "$work/machine-id"
TOML
  printf 'VARIANT_ID=bench\nVERSION_ID=1.0.0\n' > "$work/os-release"
  echo 00112233445566778899aabbccddeeff > "$work/machine-id"
  rm -rf "$work/state"
  setup_disk "$gib"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  # Reference: the plain pipeline into a file of the partition's size.
  truncate -s 0 "$work/ref.img"; truncate -s $(( (gib << 30) + (64 << 20) )) "$work/ref.img"
  /usr/bin/time -f '%e %M' -o "$work/ref.time" bash -c "curl -s '$url/targets/$stored' | $dec | dd of='$work/ref.img' bs=4M conv=fsync,notrunc status=none"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f '%e %M' -o "$work/updog.time" "$bin/updog" --config "$work/updog.toml" --disk "$work/disk.img" --active a update-image > "$work/updog.out"
  read -r rt rm < "$work/ref.time"; read -r ut um < "$work/updog.time"
  printf '%-5s %d GiB: reference %6.2f s | updog %6.2f s (peak RSS %4d MiB) | ratio %.2f\n' \
    "$codec" "$gib" "$rt" "$ut" $(( um / 1024 )) "$(echo "$ut / $rt" | bc -l)"
}

echo "== updog install vs curl | decompress | dd conv=fsync ($gib GiB root image, loopback HTTP)"
publish 1.1.0 "$gib" zstd xz lz4
run_case zstd zst "zstd -dc" 1.1.0
run_case lz4 lz4 "lz4 -dc" 1.1.0
run_case xz xz "xz -dc -T0" 1.1.0
if [ "${BENCH_4G:-1}" = 1 ]; then
  gib=4
  publish 1.1.0 4 zstd
  run_case zstd zst "zstd -dc" 1.1.0
fi
