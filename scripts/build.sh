#!/usr/bin/env bash
# Builds the hypervisor and the test guests for aarch64 with the toolchain setup.sh chose,
# and turns each ELF into a raw arm64 Image:
#   target/images/hypervisor.bin   the EL2 image (QEMU -kernel)
#   target/images/<guest>.bin      one per test guest (guest-tests/src/bin/<guest>.rs)
# ELFs with symbols stay in target/cross/$TARGET/release/ (for gdb).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f target/toolchain.env ] || scripts/setup.sh
# shellcheck disable=SC1091
. target/toolchain.env

args=(build --release --target "$TARGET" --target-dir target/cross)
if [ "$BUILD_STD" = 1 ]; then
    args+=(-Zbuild-std=core,alloc,compiler_builtins -Zbuild-std-features=compiler-builtins-mem)
    export RUSTC_BOOTSTRAP=1
fi
upper=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${upper}_LINKER=$LINKER"
export RUSTC
# Two invocations: the guests use hv-core without its heap-using parts, and one build
# would unify its features.
# The hypervisor signs its return addresses (pauth.S) and keeps frame records (for the
# backtrace in panic records); -Z flags need RUSTC_BOOTSTRAP on a stable compiler. The guests are built without it: some of them set their own PAC keys.
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zbranch-protection=pac-ret -Cforce-frame-pointers=yes" "$CARGO" "${args[@]}" -p hypervisor ${CARGO_QUIET:+-q}
"$CARGO" "${args[@]}" -p guest-tests ${CARGO_QUIET:+-q}

out=target/cross/$TARGET/release
mkdir -p target/images
bins=(hypervisor $(ls guest-tests/src/bin | sed -n 's/\.rs$//p'))
python3 scripts/elf2image.py "$out" target/images "${bins[@]}"
