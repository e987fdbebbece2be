#!/usr/bin/env bash
# `make test`: the layer check, host unit tests of the portable crates, then every boot
# test. Exits non-zero if anything failed; the last line is the boot tests' "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
echo "== layers of hypervisor/src (scripts/layers.py)"
python3 scripts/layers.py --self-test >/dev/null || { python3 scripts/layers.py --self-test; status=1; }
python3 scripts/layers.py || status=1
echo "== host unit tests (cargo test)"
cargo test -q -p hv-core || status=1
echo "== boot tests (QEMU)"
python3 scripts/boottest.py "$@" || status=1
exit $status
