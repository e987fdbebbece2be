#!/usr/bin/env bash
# Fetches a Debian arm64 kernel and busybox (as arm64 packages, with a private apt state
# under target/linux/apt: the machine's own apt configuration is not changed, and no root
# is needed) and builds a small initramfs around guest-linux/init. Cached: a second run
# fetches nothing.
#
#   target/linux/Image            the kernel (Debian's arm64 vmlinuz is a raw Image)
#   target/linux/initramfs.cpio   busybox + guest-linux/init
#
# With --xen, fetches Debian's Xen 4.17 instead (make bench runs the bench guest as its dom0):
#   target/linux/xen              the Xen image (an arm64 Image, QEMU's -kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/linux
apt_dir=$out/apt
mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,state} "$out"/debs
touch "$apt_dir/state/status"
apt_opts=(-q -o Dir::State="$PWD/$apt_dir/state" -o Dir::State::Lists="$PWD/$apt_dir/lists"
          -o Dir::State::status="$PWD/$apt_dir/state/status" -o Dir::Cache="$PWD/$apt_dir/cache"
          -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1
          -o Acquire::Retries=2 -o Acquire::http::Timeout=30)

# Brings the package lists of the private apt state up to date.
apt_update() {
    if ! timeout 600 apt-get "${apt_opts[@]}" update >"$out/apt.log" 2>&1; then
        tail -5 "$out/apt.log" >&2
        echo "fetch-linux: the Debian archive cannot be reached (log: $out/apt.log)." >&2
        return 1
    fi
}

if [ "${1:-}" = --xen ]; then
    [ -f "$out/xen" ] && exit 0
    echo "fetch-linux: fetching Debian's Xen 4.17 for arm64"
    apt_update
    (cd "$out/debs" && rm -f xen-hypervisor-*.deb &&
        timeout 900 apt-get "${apt_opts[@]}" download xen-hypervisor-4.17-arm64 >>"../apt.log" 2>&1) || {
        tail -5 "$out/apt.log" >&2
        echo "fetch-linux: downloading xen-hypervisor-4.17-arm64 failed (log: $out/apt.log)" >&2
        exit 1
    }
    rm -rf "$out/xen-root" && dpkg-deb -x "$out"/debs/xen-hypervisor-*.deb "$out/xen-root"
    cp "$out/xen-root/boot/xen-4.17-arm64" "$out/xen.new" && mv "$out/xen.new" "$out/xen"
    exit 0
fi

if [ ! -f "$out/Image" ] || [ ! -f "$out/debs/busybox.deb" ]; then
    echo "fetch-linux: fetching Debian's arm64 kernel and busybox"
    apt_update || {
        echo "fetch-linux: boot your own kernel instead: make run KERNEL=path/to/Image INITRD=path/to/initrd" >&2
        exit 1
    }
    kernel_pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-arm64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -1)
    [ -n "$kernel_pkg" ] || { echo "fetch-linux: no linux-image-arm64 in the archive" >&2; exit 1; }
    (cd "$out/debs" && rm -f ./*.deb &&
        timeout 900 apt-get "${apt_opts[@]}" download "$kernel_pkg" busybox-static >>"../apt.log" 2>&1) || {
        tail -5 "$out/apt.log" >&2
        echo "fetch-linux: download failed (log: $out/apt.log); or boot your own: make run KERNEL=... INITRD=..." >&2
        exit 1
    }
    mv "$out"/debs/linux-image-*.deb "$out/debs/kernel.deb"
    mv "$out"/debs/busybox-static*.deb "$out/debs/busybox.deb"
    rm -rf "$out/kernel-root" && dpkg-deb -x "$out/debs/kernel.deb" "$out/kernel-root"
    cp "$out"/kernel-root/boot/vmlinuz-* "$out/Image.new"
    mv "$out/Image.new" "$out/Image"
    echo "fetch-linux: kernel $(basename "$out"/kernel-root/boot/vmlinuz-*)"
fi

# The initramfs is rebuilt whenever guest-linux/ changes.
# perfcount (counting with perf_event_open) and diskbench (random reads), built by build.sh,
# go in when they were built.
extra=()
for p in perfcount diskbench; do
    [ -f target/images/$p.elf ] && extra+=("target/images/$p.elf=bin/$p")
done
if [ ! -f "$out/initramfs.cpio" ] || [ -n "$(find guest-linux "$out/debs/busybox.deb" "${extra[@]%%=*}" -newer "$out/initramfs.cpio" 2>/dev/null)" ]; then
    rm -rf "$out/busybox-root" && dpkg-deb -x "$out/debs/busybox.deb" "$out/busybox-root"
    # Linux's own pstore/blk and virtio-blk, for the pstore cross-check and guest disks,
    # ext4 with what it needs, for a root filesystem on a disk, ramoops, virtio_console (the
    # pmsg port), virtio-rng, virtio_balloon and virtio_net (guest-linux/init).
    modules=()
    for m in drivers/virtio/virtio_mmio drivers/block/virtio_blk fs/pstore/pstore_zone fs/pstore/pstore_blk \
             lib/crc16 fs/mbcache fs/jbd2/jbd2 crypto/crc32c_generic fs/ext4/ext4 \
             lib/reed_solomon/reed_solomon fs/pstore/ramoops drivers/char/virtio_console \
             drivers/char/hw_random/virtio-rng drivers/virtio/virtio_balloon \
             net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
        ko=$(ls "$out"/kernel-root/lib/modules/*/kernel/$m.ko 2>/dev/null | head -1 || true)
        [ -n "$ko" ] && modules+=("$ko=lib/modules/$(basename "$ko")")
    done
    python3 scripts/mkinitramfs.py "$out/initramfs.cpio" \
        "$out/busybox-root/bin/busybox=bin/busybox" "guest-linux/init=init" "${modules[@]}" "${extra[@]}"
fi
