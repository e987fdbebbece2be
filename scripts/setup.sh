#!/usr/bin/env bash
# Makes this machine able to build and boot the hypervisor; idempotent and quick when
# everything is present. Writes the chosen toolchain to target/toolchain.env for build.sh.
#
#   scripts/setup.sh            build + run needs (Rust for aarch64, lld, QEMU, python3)
#   scripts/setup.sh --debug    also gdb-multiarch (for `make debug`)
#
# Rust: a toolchain that already has the aarch64-unknown-none-softfloat target (rustup
# target add ...) is used as it is. Otherwise Debian's rustc-web/cargo-web/rust-web-src
# build core and alloc from source (-Zbuild-std) and lld-22 links.
set -euo pipefail
cd "$(dirname "$0")/.."

# The target triple, as .cargo/config.toml's `aarch64` alias names it.
TARGET=$(sed -n 's/.*"--target", "\([^"]*\)".*/\1/p' .cargo/config.toml | head -1)
[ -n "$TARGET" ] || { echo "setup: no --target in .cargo/config.toml's aarch64 alias" >&2; exit 1; }
want_debug=0
[ "${1:-}" = "--debug" ] && want_debug=1
log() { echo "setup: $*"; }

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }

# --- which Rust ---------------------------------------------------------------------
rust_path=""
if command -v rustc >/dev/null 2>&1; then
    sysroot=$(rustc --print sysroot 2>/dev/null || true)
    if [ -n "$sysroot" ] && ls "$sysroot/lib/rustlib/$TARGET/lib/"libcore-*.rlib >/dev/null 2>&1; then
        rust_path=prebuilt
    fi
fi
if [ -z "$rust_path" ]; then
    rust_path=debian
    [ -x /usr/bin/rustc ] && /usr/bin/rustc --print target-list 2>/dev/null | grep -qx "$TARGET" || missing+=(rustc-web)
    [ -x /usr/bin/cargo ] || missing+=(cargo-web)
    [ -d /usr/lib/rustlib/src/rust/library/core ] || missing+=(rust-web-src)
    need_cmd ld.lld-22 lld-22
fi
need_cmd qemu-system-aarch64 qemu-system-arm
need_cmd python3 python3
# make rootfs and the root-filesystem test build and check ext4 images (mke2fs -d, e2fsck).
command -v mke2fs >/dev/null 2>&1 || [ -x /usr/sbin/mke2fs ] || missing+=(e2fsprogs)
[ $want_debug = 1 ] && need_cmd gdb-multiarch gdb-multiarch

# --- install what is missing ----------------------------------------------------------
if [ ${#missing[@]} -gt 0 ]; then
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    install="apt-get update && apt-get install -y --no-install-recommends $pkgs"
    if [ "$(id -u)" = 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "setup: missing packages: $pkgs" >&2
        echo "setup: run as root (or with sudo):  $install" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: no apt-get here; install the equivalents of: $pkgs" >&2
        exit 1
    fi
    log "installing $pkgs"
    apt_opts=(-o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30 -o DPkg::Lock::Timeout=120)
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 900 $sudo apt-get "${apt_opts[@]}" -q update >/tmp/hv-setup-apt.log 2>&1 ||
       ! timeout 1200 $sudo apt-get "${apt_opts[@]}" -q install -y --no-install-recommends $pkgs >>/tmp/hv-setup-apt.log 2>&1; then
        tail -20 /tmp/hv-setup-apt.log >&2
        echo "setup: could not install: $pkgs (log: /tmp/hv-setup-apt.log)" >&2
        echo "setup: try by hand:  $install" >&2
        exit 1
    fi
fi

# --- record the choice ----------------------------------------------------------------
mkdir -p target
if [ "$rust_path" = prebuilt ]; then
    cat > target/toolchain.env.new <<EOT
TARGET=$TARGET
CARGO=cargo
RUSTC=rustc
BUILD_STD=0
LINKER=rust-lld
EOT
    desc="the installed Rust with the prebuilt $TARGET target ($(rustc --version))"
else
    cat > target/toolchain.env.new <<EOT
TARGET=$TARGET
CARGO=/usr/bin/cargo
RUSTC=/usr/bin/rustc
BUILD_STD=1
LINKER=ld.lld-22
EOT
    desc="Debian's $(/usr/bin/rustc --version) building core/alloc from source, linked by ld.lld-22"
fi
if ! cmp -s target/toolchain.env.new target/toolchain.env 2>/dev/null; then
    mv target/toolchain.env.new target/toolchain.env
    log "using $desc"
else
    rm -f target/toolchain.env.new
fi
