#!/usr/bin/env python3
"""Benchmarks (`make bench`): boots each benchmark under QEMU with -icount shift=0 (one
instruction = 1 ns of virtual time, deterministic), collects the `BENCH name value unit`
lines the guest prints, shows a table and writes target/bench.json. Add a benchmark by
adding a Bench to BENCHES (a guest in guest-tests that prints BENCH lines)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qemu  # noqa: E402
from qemu import IMAGES, Guest, Machine  # noqa: E402

OUT = qemu.ROOT / "target" / "bench.json"


@dataclass
class Bench:
    guest: str
    smp: int = 1
    # What each row means (printed under the table).
    notes: str = ""


BENCHES = [
    Bench("bench", notes="null_hypercall_round_trip: SMCCC_VERSION over HVC #0 in a loop, minus the "
                         "empty loop: the HVC, the hypervisor's exit path and the ERET back. Target <= 100; "
                         "Xen 4.17 takes about 465 by this measurement."),
]


def run(b: Bench) -> list[dict]:
    argv = qemu.command(Machine([Guest(kernel=IMAGES / f"{b.guest}.bin", smp=b.smp)], icount=True))
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:])
        raise SystemExit(f"bench: {b.guest} exited with {p.returncode}")
    rows = [{"benchmark": m[1], "value": int(m[2]), "unit": m[3], "guest": b.guest}
            for m in re.finditer(r"BENCH (\S+) (\d+) (\S+)", p.stdout)]
    if not rows:
        raise SystemExit(f"bench: {b.guest} printed no BENCH lines")
    return rows


def main() -> int:
    rows = [r for b in BENCHES for r in run(b)]
    width = max(len(r["benchmark"]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>8}  unit")
    for r in rows:
        print(f"{r['benchmark']:<{width}}  {r['value']:>8}  {r['unit']}")
    for b in BENCHES:
        if b.notes:
            print(f"\n{b.notes}")
    OUT.write_text(json.dumps({"qemu": "-icount shift=0", "rows": rows}, indent=2) + "\n")
    print(f"\nwritten to {OUT.relative_to(qemu.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
