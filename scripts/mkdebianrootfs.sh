#!/usr/bin/env bash
# `make debian-rootfs`: a Debian bookworm arm64 system (minbase, systemd and udev) on an ext4 disk
# image, ready to boot to a login prompt:
#   make run DISK=target/debian.img ROOT=/dev/vda MEM=1G     (log in as root, no password)
#
# 1. debootstrap's first stage on the host (downloads and unpacks the packages; fakeroot
#    when not root, so that the image still gets root-owned files), into an ext4 image
#    built by mke2fs -d;
# 2. its second stage inside the guest, on the image's first boot under the hypervisor
#    (Debian's kernel and our initramfs, which switch_roots to the disk and runs
#    /hv-first-boot instead of /sbin/init): dpkg configures every package, thousands of
#    real disk writes; then the root password is emptied, fstab and hostname set, and the
#    VM powers off.
#
#   scripts/mkdebianrootfs.sh [OUTPUT [SIZE]]    (default target/debian.img, 2G)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/debian.img}
size=${2:-2G}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mke2fs=$(command -v mke2fs || echo /usr/sbin/mke2fs)
[ -x "$mke2fs" ] || { echo "debian-rootfs: mke2fs is missing (Debian: apt-get install e2fsprogs)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null && [ ! -x /usr/sbin/debootstrap ]; then
    echo "debian-rootfs: installing debootstrap" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y debootstrap >/dev/null; else sudo apt-get install -y debootstrap >/dev/null; fi
fi
debootstrap=$(command -v debootstrap || echo /usr/sbin/debootstrap)
bash scripts/fetch-linux.sh >/dev/null
make -s build
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
first_stage() {
    "$debootstrap" --foreign --arch=arm64 --variant=minbase --include=systemd-sysv,udev bookworm "$tree/root" "$mirror" >"$tree/debootstrap.log" 2>&1 \
        || { tail -20 "$tree/debootstrap.log" >&2; echo "debian-rootfs: debootstrap's first stage failed" >&2; exit 1; }
    cat >"$tree/root/hv-first-boot" <<'FIRSTBOOT'
#!/bin/sh
# The image's first boot (scripts/mkdebianrootfs.sh): debootstrap's second stage, then a
# few settings, then power off. /proc, /sys and /dev come mounted from the initramfs.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "DEBIAN SECOND STAGE: start"
if /debootstrap/debootstrap --second-stage; then
    passwd -d root
    echo debian-hv >/etc/hostname
    echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >/etc/fstab
    rm -f /hv-first-boot
    sync
    echo "DEBIAN SECOND STAGE: done"
else
    tail -30 /debootstrap/debootstrap.log
    echo "DEBIAN SECOND STAGE: failed"
fi
sync
mount -o remount,ro / 2>/dev/null
echo o >/proc/sysrq-trigger
FIRSTBOOT
    chmod 755 "$tree/root/hv-first-boot"
    rm -f "$out.tmp"
    "$mke2fs" -q -F -t ext4 -L debian -d "$tree/root" "$out.tmp" "$size"
}
mkdir -p "$(dirname "$out")"
echo "debian-rootfs: debootstrap's first stage (bookworm, arm64, from $mirror)"
if [ "$(id -u)" = 0 ]; then first_stage; else export -f first_stage; export tree out size mirror mke2fs debootstrap; fakeroot bash -c first_stage; fi
echo "debian-rootfs: its second stage inside the guest under the hypervisor (takes a while under TCG)"
python3 - "$out.tmp" <<'PY'
import sys
sys.path.insert(0, "scripts")
import qemu
from pathlib import Path
from qemu import Guest, Machine
img = Path(sys.argv[1]).resolve()
g = Guest(kernel=qemu.LINUX_DIR / "Image", initrd=qemu.LINUX_DIR / "initramfs.cpio", mem=1024 * qemu.MIB, smp=2,
          bootargs="console=ttyAMA0 quiet hvroot=/dev/vda hvinit=/hv-first-boot", disks=[qemu.Disk(img)])
r = qemu.run(qemu.command(Machine([g], cpus=2)), timeout=3600)
log = qemu.ROOT / "target" / "debian-rootfs-first-boot.log"
log.write_text(r.out)
if "DEBIAN SECOND STAGE: done" not in r.out:
    sys.exit(f"debian-rootfs: the second stage did not finish{' (timed out)' if r.hung else ''}; its log: {log}")
print(f"debian-rootfs: second stage done (log: {log})")
PY
mv "$out.tmp" "$out"
echo "debian-rootfs: $out ($size ext4: Debian bookworm, systemd); boot it: make run DISK=$out ROOT=/dev/vda MEM=1G"
