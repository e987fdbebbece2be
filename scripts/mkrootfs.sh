#!/usr/bin/env bash
# `make rootfs`: an ext4 disk image holding a busybox userspace (Debian's static busybox,
# fetched with the default kernel) and guest-linux/rootfs/sbin/init, built without root
# privileges by mke2fs -d. Boot it with: make run DISK=target/rootfs.img ROOT=/dev/vda
#
#   scripts/mkrootfs.sh [OUTPUT [SIZE]]    (default target/rootfs.img, 64M)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/rootfs.img}
size=${2:-64M}
mke2fs=$(command -v mke2fs || echo /usr/sbin/mke2fs)
[ -x "$mke2fs" ] || { echo "mkrootfs: mke2fs is missing (Debian: apt-get install e2fsprogs)" >&2; exit 1; }
bash scripts/fetch-linux.sh >/dev/null
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,sbin,dev,proc,sys,tmp,var,root,etc}
cp target/linux/busybox-root/bin/busybox "$tree/bin/busybox"
cp guest-linux/rootfs/sbin/init "$tree/sbin/init"
chmod 755 "$tree/sbin/init" "$tree/bin/busybox"
ln -s busybox "$tree/bin/sh"
echo "hvroot" > "$tree/etc/hostname"
mkdir -p "$(dirname "$out")"
rm -f "$out"
"$mke2fs" -q -F -t ext4 -L hvroot -d "$tree" "$out" "$size"
echo "mkrootfs: $out ($size ext4: busybox, /sbin/init)"
