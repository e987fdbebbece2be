#!/usr/bin/env python3
"""Benchmarks (`make bench`): boots each benchmark under QEMU with -icount shift=0,sleep=off (one
instruction = 1 ns of virtual time, deterministic), collects the `BENCH name value unit`
lines the guest prints, shows a table and writes target/bench.json. Add a benchmark by
adding a Bench to BENCHES (a guest in guest-tests that prints BENCH lines)."""
from __future__ import annotations

import dataclasses
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qemu  # noqa: E402
from qemu import IMAGES, Guest, Machine  # noqa: E402

OUT = qemu.ROOT / "target" / "bench.json"
LINUX = qemu.LINUX_DIR
MARKER = "INITRAMFS READY"
RUNS = 3
# Rounds of each Linux boot (hypervised and direct, in alternating order).
LINUX_ROUNDS = 5


@dataclass
class Bench:
    guest: str
    smp: int = 1
    cpus: int | None = None
    bootargs: str = ""
    hv_args: str = ""
    # Appended to the names of the rows the guest prints.
    label: str = ""
    # What each row means (printed under the table).
    notes: str = ""


def pac_benches() -> list[Bench]:
    """Pointer-authentication key switching: exit round trips and residencies."""
    rows = [
        Bench("bench", bootargs="pac=1", label="pac_user",
              notes="null_hypercall_round_trip_pac_user: the same for a guest that uses PAC (its keys live: "
                    "its APIA key saved and the hypervisor's restored at every exit, loaded at every entry; "
                    "its other keys only when an exit goes the slow path)."),
        Bench("bench", hv_args="pauth_keys=eager", label="no_pac_eager",
              notes="null_hypercall_round_trip_no_pac_eager: a guest that never uses PAC, keys forced live "
                    "(pauth_keys=eager): the cost eager switching puts on every exit."),
        Bench("bench", hv_args="vm0.pauth=off", label="pauth_off",
              notes="null_hypercall_round_trip_pauth_off: a VM without PAuth, i.e. what a hypervisor that "
                    "ignores PAuth does on exit; the lazy path must not cost more."),
    ]
    for user in (True, False):
        for policy in ("lazy", "adaptive", "eager"):
            who = "pac_user" if user else "no_pac"
            rows.append(Bench("bench", smp=2, cpus=1, bootargs=f"residency=1{' pac=1' if user else ''}",
                              hv_args=f"overcommit=on pauth_keys={policy}", label=f"{who}_{policy}"))
    rows[-1].notes = ("residency_<who>_<policy>: two vCPUs of one VM time-share one CPU, handing it to each "
                      "other with HV_YIELD; instructions per residency (yield exit, vCPU switch, entry, and for a "
                      "PAC user one PACIA), under each key policy, for PAC users and for guests without PAC.")
    return rows


def switch_benches() -> list[Bench]:
    """What moving a vCPU's own hardware state costs at a switch, for a vCPU that uses it in
    every residency, next to one that uses none (the PAC-free residency above); and the
    cost a vCPU that never touches debug registers or the PMU pays per exit for them."""
    rows = [Bench("bench", smp=2, cpus=1, bootargs=f"residency=1 uses={u}",
                  hv_args=f"overcommit=on{' vm0.sve=off' if u == 'fp' else ''}", label=f"{u}_user")
            for u in ("fp", "sve", "debug", "pmu")]
    rows[-1].notes = ("residency_<x>_user: as residency_no_pac_adaptive, with both vCPUs using FP/SIMD (in a VM "
                      "without SVE), SVE (256-byte vectors: a VM with SVE moves them at any FP/SIMD use too), debug (a breakpoint armed) or the PMU (cycle counter running) in every "
                      "residency, so that the state moves at every switch: the difference is its switch cost.")
    rows.append(Bench("bench", hv_args="vm0.pmu=off vm0.sve=off", label="no_pmu_no_sve",
                      notes="null_hypercall_round_trip_no_pmu_no_sve: a VM without PMU and SVE; equal to "
                            "null_hypercall_round_trip: a vCPU that never touches debug registers, the PMU, FP or "
                            "SVE pays nothing for them on its exits."))
    return rows


BENCHES = [
    Bench("bench", notes="null_hypercall_round_trip: SMCCC_VERSION over HVC #0 in a loop, minus the "
                         "empty loop: the HVC, the hypervisor's exit path and the ERET back (a guest that never "
                         "used PAC: lazy keys). Target <= 100; Xen 4.17's: xen_compare_* below."),
    *pac_benches(),
    *switch_benches(),
    Bench("bench", bootargs="latency=1",
          notes="mmio_read_*: a 32-bit load from a device register in a loop, minus the empty loop: the "
                "UART's flag register (vUART; read from its register image, no exit, while no input waits), the "
                "distributor's GICD_TYPER (vGIC, trapped), the pvpanic device's register (trapped: the emulated "
                "devices' MMIO exit; only where the machine has one). Target <= 200. mmio_write_uart_dr: a byte "
                "stored to the UART's data register from x21 (as Linux's console writes it: every byte printed is "
                "an exit) in a loop, minus the empty loop: the exit, the vUART's output path, the host UART's "
                "write, the return. "
                "vtimer_latency_*: the virtual timer set 10 ms (wfi) or 2 ms (busy) ahead, from the counter "
                "reaching CVAL to the guest handler's first instruction, median of 15, waiting in WFI or spinning. "
                "Target <= 1000."),
    Bench("bench", smp=2, cpus=2, bootargs="ipi=1",
          notes="ipi_latency: from vCPU 0's ICC_SGI1R_EL1 write to the first instruction of vCPU 1's handler, "
                "vCPU 1 waiting in WFI on its own CPU (median of 15). Target <= 1500."),
    Bench("bench", bootargs="s2=2", hv_args="populate=lazy",
          notes="stage2_fault_2m: a store to an untouched 2 MiB block of a populate=lazy VM (blocks=on, the "
                "default), minus the same store again: the fault exit, 2 MiB of frames allocated (fresh since "
                "power-on, ram_zeroed=on as qemu.py passes it: not zeroed again), mapped as 512 pages of a new "
                "table (s2leaf=page, the default), the return; _zeroing: with ram_zeroed=off, the frames zeroed."),
    Bench("bench", bootargs="s2=2", hv_args="populate=lazy ram_zeroed=off", label="zeroing"),
    Bench("bench", bootargs="s2=1", hv_args="populate=lazy blocks=off ram_zeroed=off", label="zeroing"),
    Bench("bench", bootargs="s2=1", hv_args="populate=lazy blocks=off",
          notes="stage2_fault_4k: a store to a fresh page of a populate=lazy blocks=off VM, minus the same store to a "
                "mapped page: the stage-2 fault exit, a frame allocated (fresh: not zeroed again; _zeroing: "
                "ram_zeroed=off, zeroed), the page mapped under the retry protocol, the return. Target <= 2000. unmap_one_page: HV_MEM_UNMAP of one mapped page "
                "(break-before-make, TLB invalidation by IPA and of the VMID's stage-1, the notifiers' start and "
                "end: translation cache, access tracker, trace ring; the frame freed), whole hypercall; "
                "_minus_null_call without the exit round trip. host_*: the table code alone on the host "
                "(cargo run --release --example pgtable_bench), 4 KiB map+unmap over 1 GiB, and 4 KiB maps "
                "that fold every 512th into a 2 MiB block."),
]


def run(b: Bench) -> list[dict]:
    g = Guest(kernel=IMAGES / f"{b.guest}.bin", smp=b.smp, bootargs=b.bootargs)
    r = qemu.run(qemu.command(Machine([g], cpus=b.cpus, hv_args=b.hv_args, icount=True, console_prefix=True)), timeout=300)
    if r.status != 0:
        sys.stderr.write(r.out[-3000:])
        raise SystemExit(f"bench: {b.guest} {b.bootargs} {'hung' if r.hung else f'exited with {r.status}'}")
    suffix = f"_{b.label}" if b.label else ""
    rows = [{"benchmark": m[1] + suffix, "value": int(m[2]), "unit": m[3], "guest": b.guest}
            for m in re.finditer(r"BENCH (\S+) (\d+) (\S+)", r.out)]
    if not rows:
        raise SystemExit(f"bench: {b.guest} printed no BENCH lines")
    return rows


def host_table_bench() -> list[dict]:
    """The page-table code's throughput on the host."""
    p = subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "hv-core", "--example", "pgtable_bench"],
                       cwd=qemu.ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"bench: pgtable_bench failed:\n{p.stderr[-2000:]}")
    return [{"benchmark": m[1], "value": int(m[2]), "unit": m[3], "guest": "host"}
            for m in re.finditer(r"BENCH (\S+) (\d+) (\S+)", p.stdout)]


# HV_PMSG_WRITE calls timed by the pmsg guest for the pmsg round-trip row.
PMSG_WRITES = 200


def pstore_bench() -> list[dict]:
    """From a hypervisor panic (and a guest's pvpanic) to a durable pstore record: virtio
    requests, bytes and time, as the hypervisor measures them (wall clock, median of 3)."""
    rows: dict[str, list[int]] = {}
    for _ in range(RUNS):
        for g, args, hv, pattern, names in [
            ("crash", "fault=0", "debug_faults=on", r"panic recorded \((\d+) requests, (\d+) bytes, (\d+) us",
             ["pstore_hypervisor_panic_requests", "pstore_hypervisor_panic_bytes", "pstore_hypervisor_panic_us"]),
            ("panic", "lines=20", "", r"crash recorded in dmesg-pstore_blk-\d+ \(Panic #\d+, (\d+) us",
             ["pstore_guest_crash_us"]),
            # A guest that dumps into its ramoops region after its pvpanic report: the
            # region's save when it stops (a fresh disk: the whole region).
            ("panic", "lines=1 ramoops=1", "", r"ramoops region saved to the pstore disk: \d+ page\(s\) \((\d+) KiB\) written, generation \d+, (\d+) us",
             ["ramoops_save_at_guest_panic_kib", "ramoops_save_at_guest_panic_us"]),
            ("pmsg", f"count={PMSG_WRITES}", "", r"pmsg: \d+ messages written in (\d+) us", ["pmsg_write_round_trip_us_x100"]),
        ]:
            disk = qemu.ROOT / "target" / "bench-pstore.img"
            disk.unlink(missing_ok=True)
            guest = Guest(kernel=IMAGES / f"{g}.bin", bootargs=args)
            r = qemu.run(qemu.command(Machine([guest], hv_args=hv, pstore=disk)), timeout=120)
            m = re.search(pattern, r.out)
            if not m:
                raise SystemExit(f"bench: no pstore line from {g}{' (hung)' if r.hung else ''}:\n{r.out[-2000:]}")
            for name, value in zip(names, m.groups()):
                # The pmsg row is per write, in hundredths of a microsecond.
                rows.setdefault(name, []).append(int(value) * 100 // PMSG_WRITES if name.startswith("pmsg") else int(value))
    units = {"requests": "requests", "bytes": "bytes", "us": "us", "kib": "KiB", "x100": "us x100"}
    return [{"benchmark": k, "value": sorted(v)[len(v) // 2], "unit": units[k.rsplit("_", 1)[1]], "guest": "crash/panic/pmsg"}
            for k, v in rows.items()]


def time_to_marker(argv: list[str]) -> tuple[float, str]:
    """Seconds from starting QEMU to the marker line, and all output (QEMU runs to its end,
    at most 300 s)."""
    r = qemu.run(argv, timeout=300, marker=re.escape(MARKER))
    if r.marker_at is None or r.hung:
        raise SystemExit(f"bench: {'hung' if r.hung else f'no {MARKER!r}'} from: {' '.join(argv)}\n{r.out[-2000:]}")
    return r.marker_at, r.out


def gic_sysreg_accesses(argv: list[str]) -> int:
    """Accesses to the GIC's CPU-interface system registers (ICC_*, ICV_*, ICH_*) during one
    boot (the guest powers off at the marker), counted by QEMU's trace events (one line
    each): under TCG each one ends a translation block and takes QEMU's global lock."""
    trace = qemu.ROOT / "target" / "bench-gic-trace.log"
    trace.unlink(missing_ok=True)
    r = qemu.run(argv + ["-trace", "gicv3_icc_*", "-trace", "gicv3_icv_*", "-trace", "gicv3_ich_*", "-D", str(trace)],
                 timeout=300, marker=re.escape(MARKER))
    if r.marker_at is None or not trace.exists():
        raise SystemExit(f"bench: no {MARKER!r} or no trace from: {' '.join(argv)}\n{r.out[-2000:]}")
    with trace.open(errors="replace") as f:
        count = sum(1 for line in f if "gicv3_ic" in line)
    trace.unlink()
    return count


def linux_boot(cpus: int) -> list[dict]:
    """Linux to its initramfs marker under the hypervisor and directly under QEMU, like for
    like: the same kernel, initramfs, command line, guest memory, vCPUs (= QEMU's CPUs in both,
    so the hypervisor has one CPU per vCPU), CPU model and devices (no pstore disk: the
    direct boot has none either; the only machine difference is virtualization=on). Rounds
    alternate the order (hypervised first, then direct first), LINUX_ROUNDS of each; the
    median, the spread (min-max) and the ratio of medians are printed, with the spread of the
    per-round ratios. Exits by class are counted during the hypervised boots."""
    if why := qemu.fetch_linux():
        raise SystemExit(f"bench: no Linux guest ({why})")
    g = Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * qemu.MIB, smp=cpus,
              bootargs="console=ttyAMA0 panic=-1 hvbench")
    hv_argv = qemu.command(Machine([g], cpus=cpus))
    direct_argv = qemu.direct_command(g, cpus)
    hv, direct, exits = [], [], {}
    for round_ in range(LINUX_ROUNDS):
        order = ["hv", "direct"] if round_ % 2 == 0 else ["direct", "hv"]
        for which in order:
            if which == "hv":
                t, out = time_to_marker(hv_argv)
                hv.append(t)
                for m in re.finditer(r"VM 0 vCPU \d+: (.*)", out):
                    for name, value in re.findall(r"(\w+)=(\d+)", m.group(1)):
                        exits[name] = exits.get(name, 0) + int(value)
            else:
                direct.append(time_to_marker(direct_argv)[0])
    hv_ms, direct_ms = statistics.median(hv) * 1000, statistics.median(direct) * 1000
    ratios = [h / d for h, d in zip(hv, direct)]
    spread = lambda xs: f"{min(xs) * 1000:.0f}-{max(xs) * 1000:.0f}"  # noqa: E731
    rows = [
        {"benchmark": f"linux_boot_{cpus}cpu_hypervisor", "value": round(hv_ms), "unit": "ms", "spread": spread(hv)},
        {"benchmark": f"linux_boot_{cpus}cpu_direct", "value": round(direct_ms), "unit": "ms", "spread": spread(direct)},
        {"benchmark": f"linux_boot_{cpus}cpu_ratio_x1000", "value": round(1000 * hv_ms / direct_ms), "unit": "ratio x1000",
         "spread": f"{min(ratios) * 1000:.0f}-{max(ratios) * 1000:.0f} per round"},
    ]
    # keys_live is a state, not a count.
    rows += [{"benchmark": f"linux_boot_{cpus}cpu_{k}", "value": v // LINUX_ROUNDS, "unit": "per boot"}
             for k, v in exits.items() if k != "keys_live"]
    for which, argv in (("hypervisor", hv_argv), ("direct", direct_argv)):
        rows.append({"benchmark": f"linux_boot_{cpus}cpu_gic_sysreg_accesses_{which}", "value": gic_sysreg_accesses(argv),
                     "unit": "per boot"})
    for r in rows:
        r["guest"] = "linux"
    return rows


# Rounds of the disk rows (hypervised and direct, alternating).
DISK_ROUNDS = 5


def disk_bench() -> list[dict]:
    """64 MiB written to and read from a guest disk with O_DIRECT in 1 MiB blocks (busybox
    dd, timed by the guest), under the hypervisor (its virtio-blk over the host's) and with
    the same image attached to QEMU's own virtio-blk of a Linux booted directly: the same
    kernel, initramfs, 1 vCPU on a 1-CPU QEMU, 256 MiB. Medians of DISK_ROUNDS rounds."""
    if why := qemu.fetch_linux():
        raise SystemExit(f"bench: no Linux guest ({why})")
    image = qemu.ROOT / "target" / "bench-disk.img"
    with open(image, "wb") as f:
        f.truncate(96 * qemu.MIB)
    g = Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * qemu.MIB, smp=1,
              bootargs="console=ttyAMA0 panic=-1 quiet hvbench.disk", disks=[qemu.Disk(image)])
    argv = {"hv": qemu.command(Machine([g], cpus=1)), "direct": qemu.direct_command(g, 1)}
    us: dict[tuple[str, str], list[int]] = {}
    for round_ in range(DISK_ROUNDS):
        for which in (["hv", "direct"] if round_ % 2 == 0 else ["direct", "hv"]):
            r = qemu.run(argv[which], timeout=300)
            found = dict(re.findall(r"BENCHDISK (\w+)_64MiB_us (\d+)", r.out))
            iops = re.search(r"BENCHDISK DISKBENCH iops=(\d+)", r.out)
            if set(found) != {"write", "read"} or not iops:
                raise SystemExit(f"bench: no disk numbers from the {which} boot{' (hung)' if r.hung else ''}:\n{r.out[-2000:]}")
            for op, v in found.items():
                us.setdefault((which, op), []).append(max(int(v), 1))
            if which == "hv":
                disk = re.search(r"disk \"vm0-disk0\": requests zero_copy=(\d+) bounced=(\d+) unmap_waits=\d+ register_accesses=(\d+) busy_ns=\d+", r.out)
                if disk:
                    us.setdefault(("hv", "accesses_per_request"), []).append(int(disk.group(3)) / max(int(disk.group(1)) + int(disk.group(2)), 1))
            us.setdefault((which, "iops"), []).append(int(iops.group(1)))
    rows = []
    for op in ("write", "read"):
        mbs = {w: 64 * 1e6 / statistics.median(us[(w, op)]) for w in ("hv", "direct")}
        spread = {w: f"{64 * 1e6 / max(us[(w, op)]):.0f}-{64 * 1e6 / min(us[(w, op)]):.0f}" for w in ("hv", "direct")}
        rows += [
            {"benchmark": f"disk_seq_{op}_hypervisor", "value": round(mbs["hv"]), "unit": "MB/s", "spread": spread["hv"], "guest": "linux"},
            {"benchmark": f"disk_seq_{op}_direct", "value": round(mbs["direct"]), "unit": "MB/s", "spread": spread["direct"], "guest": "linux"},
            {"benchmark": f"disk_seq_{op}_ratio_x1000", "value": round(1000 * mbs["hv"] / mbs["direct"]), "unit": "ratio x1000", "guest": "linux"},
        ]
    iops = {w: statistics.median(us[(w, "iops")]) for w in ("hv", "direct")}
    rows += [
        {"benchmark": "disk_randread_4k_hypervisor", "value": round(iops["hv"]), "unit": "IOPS",
         "spread": f"{min(us[('hv', 'iops')])}-{max(us[('hv', 'iops')])}", "guest": "linux"},
        {"benchmark": "disk_randread_4k_direct", "value": round(iops["direct"]), "unit": "IOPS",
         "spread": f"{min(us[('direct', 'iops')])}-{max(us[('direct', 'iops')])}", "guest": "linux"},
        {"benchmark": "disk_randread_4k_ratio_x1000", "value": round(1000 * iops["hv"] / max(iops["direct"], 1)), "unit": "ratio x1000", "guest": "linux"},
    ]
    if per := us.get(("hv", "accesses_per_request")):
        rows.append({"benchmark": "disk_exits_per_request_x100", "value": round(100 * statistics.median(per)), "unit": "x100",
                     "spread": f"{100 * min(per):.0f}-{100 * max(per):.0f}", "guest": "linux"})
    # The hypervisor's instructions per random 4 KiB read: the random reads alone
    # (hvbench.disk=rand: no 1 MiB requests in the mean) under -icount shift=0 (a nanosecond
    # of the counter per instruction), time spent starting and completing requests.
    # And per 1 MiB request: the sequential write and read alone (hvbench.disk=seq), the
    # same way.
    # Most of a 1 MiB request's cost is per guest buffer, and how many buffers Linux makes of
    # dd's 1 MiB depends on how its pages happened to be allocated (about 250 or about 170
    # in this machine's runs): the buffers per request are printed beside it.
    for mode, name in (("rand", "disk_hypervisor_instructions_per_random_read"), ("seq", "disk_hypervisor_instructions_per_1mib_request")):
        alone = dataclasses.replace(g, bootargs=g.bootargs.replace("hvbench.disk", f"hvbench.disk={mode}"))
        r = qemu.run(qemu.command(Machine([alone], cpus=1, icount=True)), timeout=300)
        if m := re.search(r"disk \"vm0-disk0\": requests zero_copy=(\d+) bounced=(\d+) unmap_waits=\d+ register_accesses=\d+ busy_ns=(\d+) buffers=(\d+)", r.out):
            requests = max(int(m.group(1)) + int(m.group(2)), 1)
            rows.append({"benchmark": name, "value": round(int(m.group(3)) / requests), "unit": "instructions", "guest": "linux"})
            if mode == "seq":
                rows.append({"benchmark": "disk_guest_buffers_per_1mib_request", "value": round(int(m.group(4)) / max(int(m.group(1)), 1)), "unit": "buffers", "guest": "linux"})
    return rows


# Rounds of the reboot rows (hypervised and direct, alternating).
REBOOT_ROUNDS = 3
CRASH_LINE = r"RAMOOPS empty: crashing on purpose"
KERNEL_FIRST_LINE = r"Booting Linux on physical CPU"


def reboot_bench() -> list[dict]:
    """A reboot: Debian's Linux (1 vCPU, 256 MiB, console on) crashes on purpose in its
    initramfs (hvtest.ramoops, panic=-1: the kernel resets the machine) and boots again.
    Measured: the hypervisor's time to load the kernel and initramfs into the VM at its first
    boot and at the rebuild after SYSTEM_RESET (its own log line: a warm reset rewrites the
    pages the guest changed), and, in wall clock as the lines arrive, the crash line to the
    next kernel's first console line, under the hypervisor and booted directly by QEMU (whose
    reset reloads the images into RAM too). Medians of REBOOT_ROUNDS rounds."""
    if why := qemu.fetch_linux():
        raise SystemExit(f"bench: no Linux guest ({why})")
    g = Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * qemu.MIB, smp=1,
              bootargs="console=ttyAMA0 panic=-1 hvtest.ramoops")
    # The hypervised guest finds its record after the reset and powers off; the direct one
    # has no ramoops region and crashes again: it is stopped once its second kernel spoke.
    argv = {"hv": qemu.command(Machine([g], cpus=1, hv_args="ramoops=on")), "direct": qemu.direct_command(g, 1)}
    loaded, gap = {"first": [], "reset": []}, {"hv": [], "direct": []}
    written = []
    for round_ in range(REBOOT_ROUNDS):
        for which in (["hv", "direct"] if round_ % 2 == 0 else ["direct", "hv"]):
            r = qemu.run(argv[which], timeout=120, marker=None if which == "hv" else rf"(?s){CRASH_LINE}.*{KERNEL_FIRST_LINE}",
                         kill_at_marker=which == "direct")
            crash, kernels = r.at(CRASH_LINE), [t for t, _ in r.matches(KERNEL_FIRST_LINE)]
            later = [t for t in kernels if crash is not None and t > crash]
            if not later:
                raise SystemExit(f"bench: reboot ({which}) did not boot a second kernel:\n{r.out[-2000:]}")
            gap[which].append(later[0] - crash)
            if which == "hv":
                loads = re.findall(r"VM 0: images loaded in (\d+) ms \((\d+) KiB written", r.out)
                if len(loads) < 2:
                    raise SystemExit(f"bench: reboot: no image load lines:\n{r.out[-2000:]}")
                loaded["first"].append(int(loads[0][0]))
                loaded["reset"].append(int(loads[1][0]))
                written.append(int(loads[1][1]))
    rows = [{"benchmark": f"reboot_images_loaded_{k}_ms", "value": statistics.median(v), "unit": "ms",
             "spread": f"{min(v)}-{max(v)}"} for k, v in loaded.items()]
    rows.append({"benchmark": "reboot_images_written_at_reset_kib", "value": statistics.median(written), "unit": "KiB"})
    med = {w: statistics.median(v) * 1000 for w, v in gap.items()}
    for w, label in (("hv", "hypervisor"), ("direct", "direct")):
        rows.append({"benchmark": f"reboot_crash_to_next_kernel_{label}_ms", "value": round(med[w]), "unit": "ms",
                     "spread": f"{min(gap[w]) * 1000:.0f}-{max(gap[w]) * 1000:.0f}"})
    rows.append({"benchmark": "reboot_crash_to_next_kernel_ratio_x1000", "value": round(1000 * med["hv"] / med["direct"]),
                 "unit": "ratio x1000"})
    for r in rows:
        r["guest"] = "linux"
    return rows


# Rounds of the balloon rows.
BALLOON_ROUNDS = 3
BALLOON_MIB = 200


def balloon_bench() -> list[dict]:
    """Free page reporting: Debian's Linux (512 MiB, 1 vCPU) holds a 200 MiB tmpfs file while
    its virtio_balloon comes up and reports the rest, then deletes it. Measured: the time
    from the guest's line before the delete to the hypervisor's line for the last report
    that followed (host wall clock as the lines arrive; includes Linux's own 2 s reporting
    delay), what those reports gave back, and the pages per second the hypervisor's
    discards took (their own service time). Medians of BALLOON_ROUNDS runs."""
    if why := qemu.fetch_linux():
        raise SystemExit(f"bench: no Linux guest ({why})")
    g = Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=512 * qemu.MIB, smp=1,
              bootargs=f"console=ttyAMA0 panic=-1 quiet hvbench.balloon={BALLOON_MIB}")
    argv = qemu.command(Machine([g], cpus=1, hv_args="log=debug"))
    report = r"VM 0: balloon: report of \d+ range\(s\), (\d+) KiB given back in (\d+) us"
    values: dict[str, list[float]] = {}
    for _ in range(BALLOON_ROUNDS):
        r = qemu.run(argv, timeout=300)
        freeing = r.at(r"BALLOON freeing")
        after = [(t, m) for t, m in r.matches(report) if freeing is not None and t > freeing]
        if freeing is None or not after or r.hung:
            raise SystemExit(f"bench: no balloon reports after the free{' (hung)' if r.hung else ''}:\n{r.out[-2000:]}")
        kib = sum(int(m.group(1)) for _, m in after)
        us = sum(int(m.group(2)) for _, m in after)
        values.setdefault("balloon_free_to_host_ms", []).append((after[-1][0] - freeing) * 1000)
        values.setdefault("balloon_given_back_after_free_mib", []).append(kib / 1024)
        values.setdefault("balloon_reported_pages_per_s", []).append(kib / 4 / max(us, 1) * 1e6)
    units = {"ms": "ms", "mib": "MiB", "s": "pages/s"}
    return [{"benchmark": k, "value": round(statistics.median(v)), "unit": units[k.rsplit("_", 1)[1]],
             "spread": f"{min(v):.0f}-{max(v):.0f}", "guest": "linux"} for k, v in values.items()]


# Rounds of the network rows (hypervised and direct, alternating), and MiB sent per run: to the
# host (QEMU's user networking is slow under TCG: about 1 MB/s) and VM to VM.
NET_ROUNDS = 3
NET_HOST_MIB = 8
NET_VM_MIB = 64


class TcpSink:
    """A TCP server on 127.0.0.1 that reads and discards what comes, timing it: the host end
    of the to-host rows (from the first byte to the last, on the host's clock)."""

    def __init__(self) -> None:
        import socket
        import threading
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.last: tuple[int, float] = (0, 0.0)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                total, first, last = 0, None, 0.0
                while chunk := conn.recv(1 << 16):
                    now = time.monotonic()
                    first = first or now
                    total, last = total + len(chunk), now
                if first is not None and last > first:
                    self.last = (total, last - first)

    def take(self) -> float | None:
        """MB/s of the last connection (None if none)."""
        total, seconds = self.last
        self.last = (0, 0.0)
        return total / seconds / 1e6 if total else None

    def close(self) -> None:
        self.server.close()


def net_bench() -> list[dict]:
    """TCP throughput and ping round trips inside Debian's Linux (1 vCPU each, 256 MiB):
    - to the host: the guest sends NET_HOST_MIB MiB with nc to a TCP sink on the host (its
      time from the first byte to the last) and pings 10.0.2.2 (QEMU's user networking);
      under the hypervisor through its switch and uplink card, directly with the same card
      type on the guest itself;
    - VM to VM: one guest fetches NET_VM_MIB MiB over HTTP from the other (wget, timed by the
      guest) after pinging it; under the hypervisor two VMs on its switch (a 2-CPU QEMU),
      directly two 1-CPU QEMUs joined by QEMU's socket netdev.
    Medians of NET_ROUNDS rounds in alternating order."""
    if why := qemu.fetch_linux():
        raise SystemExit(f"bench: no Linux guest ({why})")
    sink = TcpSink()
    base = "console=ttyAMA0 panic=-1 quiet"
    linux = dict(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * qemu.MIB, smp=1)
    host_guest = Guest(**linux, bootargs=f"{base} hvbench.net=upload,dhcp,10.0.2.2,{NET_HOST_MIB},{sink.port}")
    server = Guest(**linux, bootargs=f"{base} hvbench.net=serve,10.0.0.2,10.0.0.1,{NET_VM_MIB},8080")
    fetcher = Guest(**linux, bootargs=f"{base} hvbench.net=fetch,10.0.0.1,10.0.0.2,{NET_VM_MIB},8080")

    def direct(g: Guest, netdev: str) -> list[str]:
        argv = qemu.direct_command(g, 1)
        i = argv.index("-nic")
        return argv[:i] + ["-netdev", netdev, "-device", "virtio-net-device,netdev=n0",
                           "-global", "virtio-mmio.force-legacy=false"] + argv[i + 2:]

    def numbers(out: str, what: str) -> tuple[float, float | None]:
        ping = re.search(r"BENCHNET ping ([\d.]+) ms", out)
        fetched = re.search(r"BENCHNET fetched \d+ MiB in (\d+) ms", out)
        if not ping:
            raise SystemExit(f"bench: no ping from the {what} run:\n{out[-2000:]}")
        return float(ping.group(1)), (NET_VM_MIB * (1 << 20) / 1e6 / (int(fetched.group(1)) / 1000) if fetched else None)

    values: dict[str, list[float]] = {}
    try:
        for round_ in range(NET_ROUNDS):
            for which in (["hv", "direct"] if round_ % 2 == 0 else ["direct", "hv"]):
                argv = qemu.command(Machine([host_guest], cpus=1, net=True)) if which == "hv" else direct(host_guest, "user,id=n0")
                r = qemu.run(argv, timeout=600)
                ping, _ = numbers(r.out, f"{which} to-host")
                mbs = sink.take()
                if mbs is None:
                    raise SystemExit(f"bench: nothing reached the host's sink in the {which} run:\n{r.out[-2000:]}")
                values.setdefault(f"net_tcp_to_host_{which}", []).append(mbs)
                values.setdefault(f"net_ping_host_{which}", []).append(ping)
                if which == "hv":
                    out = qemu.run(qemu.command(Machine([fetcher, server], cpus=2, hv_args="net=on")), timeout=600).out
                else:
                    link = qemu_free_port()
                    serving = subprocess.Popen(direct(server, f"socket,id=n0,listen=127.0.0.1:{link}"), stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                    time.sleep(1)
                    out = qemu.run(direct(fetcher, f"socket,id=n0,connect=127.0.0.1:{link}"), timeout=600).out
                    try:
                        serving.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        serving.kill()
                ping, mbs = numbers(out, f"{which} VM-to-VM")
                if mbs is None:
                    raise SystemExit(f"bench: no VM-to-VM fetch in the {which} run:\n{out[-2000:]}")
                values.setdefault(f"net_tcp_vm_to_vm_{which}", []).append(mbs)
                values.setdefault(f"net_ping_vm_to_vm_{which}", []).append(ping)
    finally:
        sink.close()
    rows = []
    for name in ("net_tcp_to_host", "net_tcp_vm_to_vm", "net_ping_host", "net_ping_vm_to_vm"):
        unit, scale = ("MB/s x10", 10) if "tcp" in name else ("us", 1000)
        med = {w: statistics.median(values[f"{name}_{w}"]) for w in ("hv", "direct")}
        for w, label in (("hv", "hypervisor"), ("direct", "direct")):
            v = values[f"{name}_{w}"]
            rows.append({"benchmark": f"{name}_{label}", "value": round(med[w] * scale), "unit": unit,
                         "spread": f"{min(v) * scale:.0f}-{max(v) * scale:.0f}", "guest": "linux"})
        rows.append({"benchmark": f"{name}_ratio_x1000", "value": round(1000 * med["hv"] / max(med["direct"], 1e-9)),
                     "unit": "ratio x1000", "guest": "linux"})
    return rows


def qemu_free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Xen 4.17 (Debian's) with the bench guest as its dom0, on the same QEMU: the machine and where
# Xen puts dom0 (1:1, at the RAM bank it allocates: build.sh moves the guest there).
XEN = LINUX / "xen"
XEN_DOM0_LOAD = 0x5008_0000
XEN_MODULE = 0x4900_0000
XEN_MEM = 2048 * qemu.MIB
# Xen stops booting under -icount shift=0 with 2 CPUs but boots with shift=1 (2 ns of
# virtual time per instruction): the 2-CPU IPI row runs both hypervisors so.
ICOUNT_2NS = "shift=1,sleep=off"
# The rows compared with Xen: (bench guest bootargs, rows it prints).
XEN_ROWS = [("bench=1", ["null_hypercall_round_trip"]),
            ("latency=1", ["mmio_read_uart_fr", "mmio_read_gicd_typer", "vtimer_latency_wfi", "vtimer_latency_busy"])]


def xen_command(bootargs: str, cpus: int, icount: str) -> list[str]:
    """QEMU booting Xen with the bench guest as dom0 (one vCPU per CPU, pinned), with the
    hypervisor's machine flags. Xen keeps the PL011 and gives dom0 a minimal virtual UART at
    its address (data and flag registers): the guest's console and its UART row use it."""
    argv = [qemu.QEMU, "-machine", "virt,virtualization=on,gic-version=3", "-cpu", "max,pauth-impdef=on",
            "-smp", str(cpus), "-m", f"{XEN_MEM // qemu.MIB}M", "-nographic", "-nic", "none",
            "-kernel", str(XEN),
            "-append", f"console=dtuart dtuart=/pl011@9000000 dom0_mem=256M dom0_max_vcpus={cpus} dom0_vcpus_pin guest_loglvl=all",
            # Non-empty bootargs: without them dom0 never started.
            "-device", f"guest-loader,addr={XEN_MODULE:#x},kernel={IMAGES / 'bench-xen.bin'},bootargs={bootargs}"]
    return argv + ["-icount", icount]


def bench_lines(out: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"BENCH (\S+) (\d+) (\S+)", out)}


def xen_run(bootargs: str, cpus: int, icount: str) -> dict[str, int]:
    # Killed once the guest passed: with 2 CPUs under -icount, Xen halts without powering off.
    r = qemu.run(xen_command(bootargs, cpus, icount), timeout=120, marker=r"TEST PASS", kill_at_marker=True)
    if f"to {XEN_DOM0_LOAD:016x}" not in r.out:
        raise SystemExit(f"bench: Xen did not load dom0 at {XEN_DOM0_LOAD:#x} (scripts/build.sh moves the bench "
                         f"guest there):\n{r.out[-2000:]}")
    if "TEST PASS" not in r.out:
        raise SystemExit(f"bench: the bench guest under Xen ({bootargs}) {'hung' if r.hung else 'failed'}:\n{r.out[-2000:]}")
    return bench_lines(r.out)


def hv_run(bootargs: str, cpus: int, icount: str) -> dict[str, int]:
    g = Guest(kernel=IMAGES / "bench.bin", smp=cpus, bootargs=bootargs)
    argv = qemu.command(Machine([g], cpus=cpus, icount=True, host_mem=XEN_MEM, console_prefix=True))
    r = qemu.run([icount if a == "shift=0,sleep=off" else a for a in argv], timeout=120)
    if r.status != 0:
        raise SystemExit(f"bench: bench {bootargs} {'hung' if r.hung else f'exited with {r.status}'}:\n{r.out[-2000:]}")
    return bench_lines(r.out)


def xen_bench() -> tuple[list[dict], list[tuple[str, str, str, str]]]:
    """The exit and interrupt paths of the issue's table, here and under Xen 4.17 with the
    same guest as its dom0, on the same QEMU and machine flags, like for like: instructions
    under -icount with 1 CPU, and the IPI (2 vCPUs on 2 CPUs) under -icount shift=1 (Xen
    does not boot with 2 CPUs under shift=0), halved. Rows and the side-by-side table."""
    if why := qemu.fetch_linux():
        raise SystemExit(f"bench: no Linux guest ({why})")
    p = subprocess.run(["bash", str(qemu.ROOT / "scripts" / "fetch-linux.sh"), "--xen"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"bench: no Xen: {(p.stderr.strip().splitlines() or ['fetch-linux.sh --xen failed'])[-1]}")
    rows, table = [], []
    for bootargs, names in XEN_ROWS:
        ours, xen = hv_run(bootargs, 1, "shift=0,sleep=off"), xen_run(bootargs, 1, "shift=0,sleep=off")
        for name in names:
            rows += [{"benchmark": f"xen_compare_{name}_hypervisor", "value": ours[name], "unit": "instructions"},
                     {"benchmark": f"xen_compare_{name}_xen", "value": xen[name], "unit": "instructions"},
                     {"benchmark": f"xen_compare_{name}_ratio_x1000", "value": round(1000 * ours[name] / xen[name]),
                      "unit": "ratio x1000"}]
            table.append((name + " (instructions, -icount, 1 CPU)", str(ours[name]), str(xen[name]), f"{ours[name] / xen[name]:.2f}"))
    # The guest prints virtual ns: 2 per instruction at shift=1.
    ours, xen = (run("ipi=1", 2, ICOUNT_2NS)["ipi_latency"] // 2 for run in (hv_run, xen_run))
    rows += [{"benchmark": "xen_compare_ipi_latency_hypervisor", "value": ours, "unit": "instructions"},
             {"benchmark": "xen_compare_ipi_latency_xen", "value": xen, "unit": "instructions"},
             {"benchmark": "xen_compare_ipi_latency_ratio_x1000", "value": round(1000 * ours / xen), "unit": "ratio x1000"}]
    table.append(("ipi_latency (instructions, -icount shift=1, 2 CPUs)", str(ours), str(xen), f"{ours / xen:.2f}"))
    for r in rows:
        r["guest"] = "bench/xen"
    return rows, table


def main() -> int:
    only_guests = "--guests-only" in sys.argv[1:]
    xen_table = []
    if "--disk-only" in sys.argv[1:]:
        rows = disk_bench()
    elif "--balloon-only" in sys.argv[1:]:
        rows = balloon_bench()
    elif "--net-only" in sys.argv[1:]:
        rows = net_bench()
    elif "--reboot-only" in sys.argv[1:]:
        rows = reboot_bench()
    elif "--xen-only" in sys.argv[1:]:
        rows, xen_table = xen_bench()
    else:
        linux = [] if only_guests else linux_boot(1) + linux_boot(4) + reboot_bench() + disk_bench() + balloon_bench() + net_bench()
        xen_rows, xen_table = ([], []) if only_guests else xen_bench()
        rows = [r for b in BENCHES for r in run(b)] + host_table_bench() + pstore_bench() + linux + xen_rows
    width = max(len(r["benchmark"]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>8}  unit")
    for r in rows:
        spread = f"  (spread {r['spread']})" if "spread" in r else ""
        print(f"{r['benchmark']:<{width}}  {r['value']:>8}  {r['unit']}{spread}")
    for b in BENCHES:
        if b.notes:
            print(f"\n{b.notes}")
    print("\npstore_*: from a hypervisor panic (HV_DEBUG_FAULT) and from a guest's pvpanic report to a durable record on "
          "the pstore disk (data sectors, then the header sector, then a flush; target: at most 3 requests), bytes of "
          "the record, and time as the hypervisor's counter measures it under TCG (median of 3). ramoops_save_at_guest_panic_*: "
          "a guest's ramoops region (1 MiB) saved to the pstore disk when the VM stops after its panic (a fresh disk: "
          "all of it; later saves write only the pages it changed). pmsg_write_round_trip_us_x100: one HV_PMSG_WRITE "
          "of a short line, durable on return (data sectors, header sector, flush), from the guest, in hundredths of a "
          f"microsecond (the mean of {PMSG_WRITES}).")
    print(f"\nlinux_boot_<n>cpu_*: Debian's kernel from QEMU start to '{MARKER}' in its initramfs (wall clock, "
          f"median and spread of {LINUX_ROUNDS} rounds, the two boots of a round in alternating order), under the "
          "hypervisor (including its own boot and building the VM) and booted directly by QEMU, like for like: the "
          "same kernel, initramfs, command line (console on: the kernel log goes to the UART), 256 MiB of guest memory, n vCPUs on a QEMU "
          "with n CPUs, CPU model, no disk; ratio_x1000 is the ratio of the medians, with the spread of the "
          "per-round ratios. The exit counts are per hypervised boot, by class.")
    print(f"\nreboot_*: Debian's Linux (1 vCPU, 256 MiB, console on) crashes on purpose in its initramfs and "
          f"panic=-1 resets the machine: the hypervisor's time to load the kernel and initramfs into the VM at its "
          f"first boot and at the rebuild after SYSTEM_RESET (a warm reset writes only the pages the guest changed: "
          f"_written_at_reset), and in wall clock from the crash line to the next kernel's first console line, "
          f"hypervised and booted directly by QEMU (whose reset reloads the images too); medians of {REBOOT_ROUNDS} "
          f"rounds in alternating order.")
    print(f"\ndisk_seq_*: 64 MiB written, then read, by busybox dd with O_DIRECT in 1 MiB blocks inside Debian's "
          f"Linux (1 vCPU, 256 MiB), timed by the guest; under the hypervisor (the guest's pages handed to the host "
          f"disk, completion by its interrupt) and with the same image on QEMU's own virtio-blk "
          f"of a directly booted Linux; medians of {DISK_ROUNDS} rounds in alternating order. disk_randread_4k: 4 KiB "
          f"O_DIRECT reads at random offsets for a second (/bin/diskbench). Target: ratio >= 0.9. "
          f"disk_exits_per_request: the guest's accesses to the disk's registers (each an exit: notifications, "
          f"interrupt status and acknowledgement) per request, over the whole hypervised boot. "
          f"disk_hypervisor_instructions_per_random_read: the hypervisor's instructions starting and completing a "
          f"4 KiB random read (from the guest's notification to the host disk's, and from the host disk's interrupt "
          f"to the guest's), the random reads alone under -icount shift=0 (the exits around them not counted); "
          f"disk_hypervisor_instructions_per_1mib_request: the same for the sequential write and read alone (128 "
          f"requests of 1 MiB, 250 guest buffers each, and the partition-table read).")
    print(f"\nballoon_*: Debian's Linux (512 MiB, 1 vCPU) deletes a {BALLOON_MIB} MiB tmpfs file after its "
          f"virtio_balloon reported the rest of its free memory: from the guest's line before the delete to the "
          f"hypervisor's log line for the last free page report that followed (host wall clock as the lines arrive; "
          f"Linux waits 2 s before it reports), the MiB those reports gave back, and the pages per second the "
          f"hypervisor's discards took (unmap through the notifiers, frames freed: their own time, TCG); medians of "
          f"{BALLOON_ROUNDS} runs.")
    print(f"\nnet_*: inside Debian's Linux (1 vCPU, 256 MiB each), TCP throughput in MB/s x10 and the average of 20 "
          f"pings: to the host ({NET_HOST_MIB} MiB sent with busybox nc to a TCP sink on 127.0.0.1 reached as 10.0.2.2 "
          f"through QEMU's user networking, timed by the sink from the first byte to the last; under the hypervisor "
          f"through its switch and its uplink card, directly with the same virtio-net card on the guest) and VM to VM "
          f"({NET_VM_MIB} MiB fetched over HTTP with busybox wget, timed by the guest; under the hypervisor two VMs on "
          f"its switch on a 2-CPU QEMU, directly two 1-CPU QEMUs joined by QEMU's socket netdev); medians of "
          f"{NET_ROUNDS} rounds in alternating order, ratio hypervised/direct (for ping, lower is better).")
    if xen_table:
        head = ("path", "this hypervisor", "Xen 4.17 dom0", "ratio")
        widths = [max(len(r[i]) for r in [head, *xen_table]) for i in range(4)]
        print("\nxen_compare_*: the same bench guest under this hypervisor and as the dom0 of Debian's Xen 4.17 on "
              "the same QEMU (machine flags, 2 GiB), like for like; target: ratio <= 0.5 on every row.")
        for r in [head, *xen_table]:
            print("  " + "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))))
    OUT.write_text(json.dumps({"qemu": "-icount shift=0,sleep=off", "rows": rows}, indent=2) + "\n")
    print(f"\nwritten to {OUT.relative_to(qemu.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
