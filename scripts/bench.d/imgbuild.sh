#!/usr/bin/env bash
# imgbuild build against the same work done by hand, on the same 1 GiB root
# file system tree, in the same run:
#
#   ours:      imgbuild build (disk image, ext4 root, dm-verity tree, boot
#              file system, ESP, zstd artifacts, release.json)
#   reference: mke2fs -d (the same root file system: same size, features
#              and options), veritysetup format, zstd -T0
#
# The reference does less (no disk image, no boot file system, no artifacts
# for boot and hash). Both leave their outputs on disk: imgbuild fsyncs
# what it writes, and the reference ends with sync of its outputs (mke2fs
# fsyncs its own). Every run starts after a sync, so none pays for the
# write-back of another's output. Wall time, best of BENCH_RUNS (default 2)
# each, run alternately; the ratio is ours / reference (goal: <= 1.0).
# The ratio is taken with --no-delta (the reference makes no seekable root
# and no delta index); one more run prints what the delta artifacts add.
set -euo pipefail
cd "$(dirname "$0")/../.."
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
for t in mke2fs veritysetup zstd; do
  if ! need "$t"; then echo "bench imgbuild: $t missing (make tools installs it); skipped"; exit 0; fi
done
export PATH="$PATH:/usr/sbin:/sbin"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mib=${IMGBUILD_BENCH_MIB:-1024}
runs=${BENCH_RUNS:-2}

# The tree: half incompressible (packed data, as compressed files and
# binaries are), half text-like (base64), and 8192 small files.
tree=$dir/tree
mkdir -p "$tree/bin" "$tree/share" "$tree/etc"
small=$((mib / 16))
big=$(((mib - small) / 2))
for i in $(seq 1 $((big / 4))); do head -c $((4 << 20)) /dev/urandom >"$tree/bin/blob$i"; done
for i in $(seq 1 $((big / 4))); do
  head -c $((3 << 20)) /dev/urandom | base64 -w 76 >"$tree/share/text$i"
  truncate -s 4M "$tree/share/text$i"
done
for d in $(seq 1 64); do
  mkdir -p "$tree/etc/d$d"
  head -c $(((small << 20) / 64 * 3 / 4)) /dev/urandom | base64 -w 76 | split -b $(((small << 20) / 8192)) -a 3 -d - "$tree/etc/d$d/f"
done
echo kernel >"$dir/vmlinuz"
head -c $((8 << 20)) /dev/urandom >>"$dir/vmlinuz"
tree_mib=$(du -sm --apparent-size "$tree" | cut -f1)

size=3GiB
# The root file system ours makes fills the ROOT partition of a 3 GiB disk;
# the reference makes one of the same size.
mkdir -p "$dir/empty"
SOURCE_DATE_EPOCH=1 bin/imgbuild build --kernel "$dir/vmlinuz" --rootfs "$dir/empty" --variant bench --arch x86_64 \
  --version 1.0.0 --size $size --no-disk --out "$dir/probe" >/dev/null
root_bytes=$(awk '/"root": \{/{r=1} r && /"size"/{gsub(/[^0-9]/,""); print; exit}' "$dir/probe/release.json")
rm -rf "$dir/probe" "$dir/empty"
cat >"$dir/mke2fs.conf" <<'EOF'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
EOF

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b - a}'; }
less() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a < b)}'; }
ours() {
  local extra=${1:-}
  rm -rf "$dir/out"
  sync
  local t0 t1
  t0=$(now)
  SOURCE_DATE_EPOCH=1700000000 bin/imgbuild build --kernel "$dir/vmlinuz" --rootfs "$tree" --variant bench --arch x86_64 \
    --version 1.0.0 --size $size --out "$dir/out" $extra >/dev/null
  t1=$(now)
  elapsed "$t0" "$t1"
}
reference() {
  rm -f "$dir/root.img" "$dir/hash.img" "$dir/root.img.zst"
  sync
  local t0 t1
  t0=$(now)
  MKE2FS_CONFIG="$dir/mke2fs.conf" E2FSPROGS_FAKE_TIME=1700000000 mke2fs -F -q -t ext4 -b 4096 -m 0 \
    -E root_owner=0:0,nodiscard,lazy_itable_init=0 -d "$tree" "$dir/root.img" $((root_bytes / 1024))k >/dev/null
  veritysetup format "$dir/root.img" "$dir/hash.img" >/dev/null
  zstd -T0 -q "$dir/root.img" -o "$dir/root.img.zst"
  sync "$dir/hash.img" "$dir/root.img.zst"
  t1=$(now)
  elapsed "$t0" "$t1"
}
best_ours="" best_ref=""
for _ in $(seq 1 "$runs"); do
  o=$(ours --no-delta)
  r=$(reference)
  if [ -z "$best_ours" ] || less "$o" "$best_ours"; then best_ours=$o; fi
  if [ -z "$best_ref" ] || less "$r" "$best_ref"; then best_ref=$r; fi
done
ours_zst=$(stat -c %s "$dir"/out/*-root.ext4.zst)
with_delta=$(ours)
ref_zst=$(stat -c %s "$dir/root.img.zst")
awk -v mib="$tree_mib" -v root="$root_bytes" -v o="$best_ours" -v r="$best_ref" -v oz="$ours_zst" -v rz="$ref_zst" 'BEGIN{
  printf "bench imgbuild build, %d MiB tree in a %d MiB ext4 root: imgbuild %.2fs (root artifact %.0f MiB)  mke2fs -d + veritysetup format + zstd -T0 %.2fs (%.0f MiB)  ratio (ours/theirs) %.2f\n",
    mib, root/1048576, o, oz/1048576, r, rz/1048576, o/r }'
awk -v o="$best_ours" -v d="$with_delta" 'BEGIN{
  printf "bench imgbuild build with the delta artifacts (.seek.zst, .didx) too: %.2fs (+%.0f%%)\n", d, (d/o-1)*100 }'
