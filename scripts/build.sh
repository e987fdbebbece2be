#!/usr/bin/env bash
# Builds the hypervisor and the test guests for aarch64 (the `cargo hypervisor` and
# `cargo guests` aliases of .cargo/config.toml, with the toolchain setup.sh chose) and turns
# each ELF into a raw arm64 Image:
#   target/images/hypervisor.bin   the EL2 image (QEMU -kernel)
#   target/images/<guest>.bin      one per test guest (guest-tests/src/bin/<guest>.rs)
#   target/images/perfcount.elf    static Linux programs for the Linux guest's initramfs
#   target/images/diskbench.elf
#   target/images/bench-xen.bin    the bench guest moved to where Xen loads its dom0
# ELFs with symbols stay in target/cross/<target>/release/ (for gdb).
#
# What cargo's configuration cannot say lives here: which cargo and rustc (setup.sh's
# choice), building core and alloc from source when the toolchain has no prebuilt aarch64
# ones (which takes RUSTC_BOOTSTRAP for cargo itself), and rustup's own linker.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f target/toolchain.env ] || scripts/setup.sh
# shellcheck disable=SC1091
. target/toolchain.env

export RUSTC
std=()
if [ "$BUILD_STD" = 1 ]; then
    std=(-Zbuild-std=core,alloc,compiler_builtins -Zbuild-std-features=compiler-builtins-mem)
    export RUSTC_BOOTSTRAP=1
fi
if [ "$LINKER" != ld.lld-22 ]; then
    upper=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${upper}_LINKER=$LINKER"
fi
# Two invocations: the guests use hv-core without its heap-using parts (one build would
# unify its features), and only the hypervisor signs its return addresses.
"$CARGO" hypervisor "${std[@]}" ${CARGO_QUIET:+-q}
"$CARGO" guests "${std[@]}" ${CARGO_QUIET:+-q}

out=target/cross/$TARGET/release
mkdir -p target/images
# perfcount and diskbench are Linux programs for the Linux guest's initramfs
# (fetch-linux.sh), not Images.
bins=(hypervisor $(ls guest-tests/src/bin | sed -n 's/\.rs$//p' | grep -vx 'perfcount\|diskbench'))
python3 scripts/elf2image.py "$out" target/images "${bins[@]}"
for p in perfcount diskbench; do
    python3 scripts/elf2image.py --exec "$out/$p" target/images/$p.elf
done
# The bench guest as Xen's dom0 (make bench): Xen loads it at its dom0's RAM bank, which it
# places at 0x5000_0000 on the bench's Xen machine (scripts/bench.py: xen_command), plus
# text_offset.
python3 scripts/elf2image.py --rebase 0x50080000 "$out/bench" target/images/bench-xen.bin
