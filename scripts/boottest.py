#!/usr/bin/env python3
"""Boot tests: each boots the hypervisor under QEMU with one or more guests, bounded by a
timeout, and checks QEMU's exit status and the console for what the test names. Also the
checks that bad input is refused before QEMU starts.

    scripts/boottest.py [-k SUBSTRING] [--timeout S]

Logs go to target/test-logs/<test>.log. Ends with 'N passed, N failed'; exits non-zero if
any test failed or hung.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qemu  # noqa: E402
import pstoretest  # noqa: E402
from qemu import IMAGES, LINUX_DIR as LINUX, LOGS, MIB, Guest, Machine, UserError  # noqa: E402
PASS_LINE = r"test verdict PASS"
# busybox sh's prompt, the last thing on the console (its line editing asks for the cursor
# position right after it).
PROMPT = r"\n/ # (\x1b\[6n)?$"
# Every frame a VM had is back once it is gone.
NO_LEAK = r"(\d+) KiB free for guests(?s:.*)VM 0: freed \d+ KiB of RAM and \d+ stage-2 table pages \(\1 KiB free\)"


def guest(name: str, **kw) -> Guest:
    """One of our test guests (target/images/<name>.bin)."""
    return Guest(kernel=IMAGES / f"{name}.bin", **kw)


@dataclass
class BootTest:
    name: str
    machine: Machine
    # Regular expressions that must all appear in the console output.
    expect: list[str] = field(default_factory=list)
    # ... and ones that must not.
    reject: list[str] = field(default_factory=lambda: [r"HYPERVISOR PANIC", r"hypervisor exception at EL2"])
    status: int = 0
    # False: skip qemu.py's checks of the guests, to reach the hypervisor's own.
    validate: bool = True
    # Needs the Debian kernel and initramfs (scripts/fetch-linux.sh).
    linux: bool = False
    # Typed on the console: each (regex, text) sends text once the output matches regex.
    dialog: list[tuple] = field(default_factory=list)
    # The focused VM's output raw, as `make run` shows it (else every VM's as `vmN| ` lines).
    raw: bool = False
    # A differential test: the (single) guest also boots directly on QEMU, and the lines it
    # prints as `observe ...` must be the same in both runs.
    compare_bare: bool = False
    # Run before the boot (files it needs), and after it (problems found outside the log).
    before: object = None
    after: object = None
    # Problems found in the console output by code (numbers compared across lines).
    check_log: object = None
    # Seconds the boot may take, when the default (--timeout) is too tight for a test that
    # waits on purpose (the guest's own sleeps) on a slow or busy machine.
    timeout: float | None = None


@dataclass
class PtyTest:
    """`make run` on a pseudo-terminal, as a person types at it."""
    name: str
    args: list[str]
    dialog: list[tuple]
    expect: list[str]
    status: int = 0


def pty_tests() -> list[PtyTest]:
    esc = "printf '\\033[1;31mRED\\033[0m-%s\\n' $((6*7))\r"
    return [
        # The prompt shows before any key; a typed line echoes as typed; Ctrl-C stops a
        # command; escape sequences pass unmangled; poweroff -f ends make run with status 0.
        PtyTest("make-run-on-a-terminal", ["VMS=1"], dialog=[
            (PROMPT, "echo typed-$((6*7))\r", 0.3), (r"\ntyped-42\r*\n", "sleep 100\r", 0.3), (r"sleep 100\r*\n", "\x03", 0.5),
            (r"\^C\r*\n/ # ", esc, 0.3), (r"RED\x1b\[0m-42", "poweroff -f\r", 0.3)],
            expect=[r"/ # (\x1b\[6n)?echo typed-\$\(\(6\*7\)\)\r*\n", r"\x1b\[1;31mRED\x1b\[0m-42\r*\n",
                    r"machine exit status 0"]),
    ]


def run_pty(t: PtyTest, timeout: float) -> tuple[bool, str]:
    if why := qemu.fetch_linux():
        return False, f"no Linux guest: {why}"
    log = LOGS / f"{t.name}.log"
    master, slave = os.openpty()
    p = subprocess.Popen(["make", "-s", "--no-print-directory", "run", *t.args], cwd=qemu.ROOT, stdin=slave, stdout=slave,
                         stderr=slave, start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout

    def pump(seconds: float) -> None:
        ready, _, _ = select.select([master], [], [], seconds)
        if ready:
            try:
                out.extend(os.read(master, 4096))
            except OSError:  # the terminal's other side closed
                time.sleep(seconds)

    problems = []
    for pattern, text, *later in t.dialog:
        while not re.search(pattern, out.decode(errors="replace")) and time.monotonic() < deadline and p.poll() is None:
            pump(0.05)
        if not re.search(pattern, out.decode(errors="replace")):
            problems.append(f"never saw /{pattern}/ to answer")
            break
        time.sleep(later[0] if later else 0)
        os.write(master, text.encode())
    while p.poll() is None and time.monotonic() < deadline:
        pump(0.05)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        problems.append(f"hung: no exit within {timeout:.0f} s")
    pump(0.1)
    os.close(master)
    text = out.decode(errors="replace")
    log.write_text(text)
    if p.returncode is not None and p.returncode != t.status and not problems:
        problems.append(f"exit status {p.returncode}, expected {t.status}")
    problems += [f"missing /{x}/" for x in t.expect if not re.search(x, text)]
    return not problems, "; ".join(problems) + (f" (log: {log})" if problems else "")


@dataclass
class InputTest:
    """Input to `make print` (the options as make takes them, NAME=value): bad input must be
    refused with one clear line and status 2 before QEMU starts; good input must reach the
    command line exactly as given."""
    name: str
    args: list[str]
    # A regex the one-line error (status 2), or with status 0 the printed command line, holds.
    message: str
    status: int = 2


def boot_tests() -> list[BootTest]:
    verdict = [PASS_LINE, r"all VMs stopped; machine exit status 0"]
    return [
        BootTest("hello", Machine([guest("hello", smp=2)], cpus=2), [
            r"vm0\| hello from vCPU 0 at EL1", r"vm0\| hello from vCPU 1 at EL1",
            r"vm0\| memory: 128 MiB at 0x40000000", r"vm0\| vCPUs in device tree: 2",
            r"vm0\| hypervisor version 0\.1\.0", *verdict]),
        # More vCPUs than one affinity cluster holds (16 per Aff1) and than CPUs.
        BootTest("hello-20-vcpus", Machine([guest("hello", smp=20)], cpus=2, hv_args="overcommit=on"), [
            r"vm0\| vCPUs in device tree: 20", r"vm0\| hello from vCPU 19 at EL1", r"vm0\| all 20 vCPU\(s\) reported", *verdict]),
        # The hypervisor's own memcpy, memmove, memset and memcmp (arch/aarch64/mem.S)
        # against byte-at-a-time references: every length to 200 bytes at misalignments,
        # overlaps both ways.
        BootTest("mem-routines", Machine([guest("hello")], hv_args="selftest=on"), [
            r"self-test: memcpy, memmove, memset and memcmp right in \d+ cases", *verdict]),
        BootTest("hypercalls", Machine([guest("hypercalls")]), [
            r"vm0\| console hypercall works", r"vm0\| 2000 random hypercalls answered", *verdict]),
        BootTest("psci", Machine([guest("psci", smp=4)], cpus=4), [
            r"vm0\| vCPU 3 up \(MPIDR 0x80000003\), context 0x1003", r"vm0\| 3 secondary vCPUs started",
            r"vm0\| vCPU 1 restarted after CPU_OFF", *verdict]),
        BootTest("isolation", Machine([guest("isolation")]), [
            r"vm0\| (\d+) probes outside RAM, \1 aborts injected", r"abort injected", *verdict]),
        # With the PMU and SVE off: hidden in the ID registers, their registers UNDEFINED.
        BootTest("sysreg", Machine([guest("sysreg")], hv_args="vm0.pmu=off vm0.sve=off"), [
            r"read of PMCR_EL0 .*UNDEF injected", r"vm0\| 6 trapped register accesses, 1 UNDEFs injected", r"vm0\| ID registers: PFR0", *verdict]),
        BootTest("timers", Machine([guest("timer")]), [
            r"vm0\| timers behave as the architecture says", *verdict], compare_bare=True),
        BootTest("debug", Machine([guest("debug")]), [
            r"vm0\| debug exceptions taken by the guest", *verdict], compare_bare=True),
        BootTest("debug-shared-cpu", Machine([guest("debug", bootargs=f"share=1 rounds=50 tag={t}") for t in (1, 2)], cpus=1), [
            r"vm0\| tag 1: own breakpoint kept across 50 waits", r"vm1\| tag 2: own breakpoint kept across 50 waits",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        BootTest("pmu", Machine([guest("pmu")]), [r"vm0\| PMU works", *verdict], compare_bare=True),
        BootTest("pmu-shared-cpu", Machine([guest("pmu", bootargs=f"share=1 rounds=50 tag={t}") for t in (1, 2)], cpus=1), [
            r"vm0\| tag 1: own counter kept across 50 waits", r"vm1\| tag 2: own counter kept across 50 waits",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        BootTest("sve", Machine([guest("sve")]), [r"vm0\| SVE works", *verdict], compare_bare=True),
        BootTest("sve-capped", Machine([guest("sve")], hv_args="vm0.sve=512"), [
            r"vm0\| observe longest vector 64 bytes", r"vm0\| observe ZCR_EL1.LEN 15 gives 64 bytes", *verdict]),
        BootTest("sve-off", Machine([guest("sve", bootargs="expect=off")], hv_args="vm0.sve=off"), [r"vm0\| SVE hidden", *verdict]),
        BootTest("sve-shared-cpu", Machine([guest("sve", bootargs=f"share=1 rounds=30 tag={t}") for t in (1, 2)], cpus=1), [
            r"vm0\| tag 1: 256-byte SVE registers intact across 30 waits", r"vm1\| tag 2: 256-byte SVE registers intact across 30 waits",
            r"VM 0 vCPU 0: .*fp_loads=[1-9]\d\s",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        # An empty machine (no entropy device or balloon: rng=off balloon=off) against bare QEMU's.
        BootTest("virtio-slots", Machine([guest("virtio_slots")], hv_args="rng=off balloon=off"), [
            r"vm0\| 32 empty virtio-mmio slots", *verdict], compare_bare=True),
        # The memory balloon driven by a guest of its own (both interfaces): reported and
        # inflated pages go back to the host and read as zero afterwards; bad reports and PFNs
        # are refused (logged, counted), nothing changes for them.
        *[BootTest(f"balloon{suffix}", Machine([guest("balloon", bootargs="target=64", virtio_legacy=legacy)], hv_args="vm0.balloon=64M"), [
            r"VM 0: memory balloon \(virtio-balloon, free page reporting\) in virtio-mmio slot 2 \(SPI 18\), target 64 MiB",
            r"vm0\| balloon: reported 4 MiB went back to the host and read as zero", r"vm0\| balloon: bad reports refused, nothing changed",
            r"vm0\| balloon: inflated pages went back, PFNs outside RAM ignored",
            *[rf"VM 0: balloon: a reported free range refused: {why}\s" for why in ("NotRam", "Unaligned", "WrongDirection", "Overlapping")],
            r"VM 0: balloon: inflated page at 0xfffffff0000 \(\+0x1000\) refused: OutOfRange", r"VM 0: balloon: inflated page at 0x10000 \(\+0x1000\) refused",
            r"VM 0 balloon: target=65536KiB actual=0KiB inflated_pages=4 deflated_pages=0 reports=4 reported_bytes=4202496 given_back_bytes=4210688 refused=8 ",
            *verdict]) for suffix, legacy in (("", False), ("-legacy", True))],
        # The same in two VMs taking turns on one CPU: each one's timers, pending states and
        # deadlines stay its own across switches.
        BootTest("timers-shared-cpu", Machine([guest("timer"), guest("timer")], cpus=1), [
            r"vm0\| timers behave as the architecture says", r"vm1\| timers behave as the architecture says",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        BootTest("smp", Machine([guest("smp", smp=4)], cpus=4), [
            r"vm0\| 4 vCPUs added 20000 each: total 80000", *verdict]),
        # Stage-2 memory management from a guest, in each memory mode: first touch, unmap and
        # refault, write/execute protection, aging, reclaim, the translation cache, bad ranges,
        # and two vCPUs faulting and unmapping the same pages at once.
        *[BootTest(f"mem-{mode}", Machine([guest("mem", smp=2, bootargs=args)], cpus=2, hv_args=hv), [
            r"vm0\| first touch: ok", r"vm0\| unmap and refault: ok", r"vm0\| write and execute protection: ok",
            r"vm0\| aging: ok", r"vm0\| translation cache: ok", r"vm0\| reclaim: ok", r"vm0\| bad ranges refused: ok",
            r"vm0\| concurrent: 3000 rounds, \d+ unmaps of mapped pages, \d+ writer checks",
            r"VM 0: stage-2 trace, \d+ events so far", r"VM 0:   #\d+ end Unmap 0x", NO_LEAK, *verdict])
          for mode, args, hv in [("eager", "", "populate=eager"), ("eager-keep", "keep=1", "populate=eager refault=keep"),
                                 ("lazy", "lazy=1 blocks=1", "populate=lazy"),
                                 ("lazy-keep", "lazy=1 blocks=1 keep=1", "populate=lazy refault=keep"),
                                 ("lazy-pages", "lazy=1", "populate=lazy blocks=off")]],
        # A guest's own virtio-blk driver against the device model (every request type, bad
        # requests, broken rings and the reset after them, a second disk), and the same guest
        # on bare QEMU's virtio-blk with the same images: the same observations.
        *[BootTest(f"virtio-blk{suffix}", Machine([guest("vblk", disks=[qemu.Disk(VBLK_DISK), qemu.Disk(VBLK_DISK2)],
                                                         virtio_legacy=legacy)]), [
            rf"vm0\| observe slot 31: version {1 if legacy else 2} device 2", r"vm0\| observe capacity 2048 sectors, blk_size 512",
            r"vm0\| observe GET_ID status 0 serial \"vm0-disk0\"", r"vm0\| observe read sector 0: status 0 starts \"VBLK-TEST-SECTOR",
            r"vm0\| observe write 0 flush 0 read 0 used 1025 same true",
            r"vm0\| observe past the end Some\(1\) not whole sectors Some\(1\) unknown type Some\(2\)",
            r"vm0\| observe discard true write-zeroes true", r"vm0\| observe write-zeroes Some\(0\) then read 0 zeroed true",
            r"vm0\| observe discard Some\(0\) with unmap flag Some\(2\) write-zeroes bad flags Some\(2\) past the end Some\(1\) "
            r"both Some\(1\) empty Some\(0\) two ranges Some\(2\)",
            r"vm0\| observe reset with a read in flight, then a read: status 0 starts \"VBLK-TEST-SECTOR",
            rf"vm0\| observe index past the queue: answered false needs reset {broken} config interrupt {broken}",
            rf"vm0\| observe loop: answered false needs reset {broken} config interrupt {broken}",
            rf"vm0\| observe readable after writable: answered false needs reset {broken} config interrupt {broken}",
            rf"vm0\| observe indirect table of 24 bytes: answered false needs reset {broken} config interrupt {broken}",
            r"vm0\| observe slot 30: capacity 256 GET_ID status 0 serial \"vm0-disk1\"",
            r"vm0\| register reads: 400, exits 0 ", *verdict],
            compare_bare=True, before=fresh_vblk_disks)
          # The legacy interface has no DEVICE_NEEDS_RESET: a broken queue just stops (QEMU too).
          for suffix, legacy, broken in [("", False, "true"), ("-legacy", True, "false")]],
        # A disk's DMA against the guest taking the pages away (the stage-2 notifier waits for
        # the host device): VM 0 unmaps, reclaims or write-protects the buffer of each read
        # while it is in flight; VM 1, on 4 KiB pages, keeps taking freed frames and checks
        # that nothing writes them underneath it.
        BootTest("virtio-blk-dma-vs-unmap", Machine([guest("vblkdma", disks=[qemu.Disk(DMA_DISK)]), guest("vblkdma", bootargs="role=1")],
                                                    cpus=2, hv_args="blocks=off"), [
            r"vm0\| dma: 3000 reads, 750 with their buffer unmapped, [1-9]\d* reclaimed, 750 write-protected in flight",
            r"vm1\| watcher: 400 cycles of 4096 KiB, 0 words changed underneath",
            r"VM 0 disk \"vm0-disk0\": requests zero_copy=3000 bounced=0 unmap_waits=[1-9]",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"], before=fresh_dma_disk),
        # A hostile guest: 20,000 random hypercalls (known calls with bad arguments, unknown
        # IDs, HVC and SMC) and every system-register encoding, next to a VM that must not
        # notice. A new seed each run (printed; rerun one with bootargs seed=N).
        BootTest("hostile-guest", Machine([guest("hostile", bootargs=f"seed={random.randrange(1, 1 << 40)}"), guest("smp", smp=2)], cpus=2), [
            r"vm0\| hostile guest: seed \d+", r"vm0\| \d{5} hypercalls: \d+ ok, \d+ error codes, \d+ not supported",
            r"vm0\| \d{5} system-register accesses", r"vm0\| hostile guest: \d+ inputs tried, hypervisor healthy",
            r"vm1\| 2 vCPUs added 20000 each: total 40000", r"VM 0: test verdict PASS", r"VM 1: test verdict PASS",
            r"machine exit status 0"]),
        # A VM's secret never reaches another: the writer fills 206 MiB and powers off (its
        # frames go back); the reader then faults in its own 206 MiB from the same pool and
        # finds only zeros. (Reuse of the writer's frames is likely, not forced: memory
        # committed to two VMs at once never overlaps.)
        BootTest("no-secret-leak", Machine([guest("secret", mem=224 * MIB), guest("secret", mem=224 * MIB, bootargs="role=1")], cpus=2,
                                           host_mem=512 * MIB), [
            r"vm1\| secret written: 206 MiB", # 52224: the block holding the ramoops region is populated when the VM is built (its
            # pages are write-protected for dirty logging), so 512 pages fewer come on first touch.
            r"vm0\| scanned 206 MiB \(52224 pages given on first touch\): 0 secret words, 0 non-zero words",
            r"VM 0: test verdict PASS", r"machine exit status 0"]),
        # The same after a reset of the whole machine (QEMU's system_reset keeps RAM): the
        # hypervisor, told the RAM was zero at power-on (ram_zeroed=on, as qemu.py says),
        # finds it was reset (a mark in memory no image loads) and zeroes frames again, so the
        # VM booted again reads zeros where it wrote its secret.
        BootTest("no-secret-leak-machine-reset", Machine([guest("secret", mem=224 * MIB, bootargs="role=2")], cpus=1, host_mem=512 * MIB), [
            r"(?s)secret written, waiting for a machine reset.*machine was reset since power-on: every frame is zeroed before use"
            r".*vm0\| scanned 206 MiB \(\d+ pages given on first touch\): 0 secret words, 0 non-zero words.*VM 0: test verdict PASS",
            r"machine exit status 0"], dialog=[(r"secret written, waiting for a machine reset", "\x01csystem_reset\n")]),
        BootTest("stop-spinning-vcpu", Machine([guest("spin", smp=2)], cpus=2), [
            r"vm0\| vCPU 1 is spinning", *verdict]),
        # Alone on its CPU, a vCPU's WFI stays in the guest (wfx=0): the stop's kick wakes it.
        BootTest("stop-wfi-masked-vcpu", Machine([guest("spin", smp=2, bootargs="wfi=1"), guest("hello")], cpus=2), [
            r"vm0\| vCPU 1 is waiting with interrupts masked", r"VM 0 vCPU 1: .* wfx=0 ", r"VM 1: test verdict PASS", *verdict]),
        # Sharing a CPU, its WFI traps (wfx>0), so that the other vCPU runs.
        BootTest("stop-wfi-masked-vcpu-shared-cpu", Machine([guest("spin", smp=2, bootargs="wfi=1")], cpus=1, hv_args="overcommit=on"), [
            r"vm0\| vCPU 1 is waiting with interrupts masked", r"VM 0 vCPU 1: .* wfx=[1-9]\d* ", *verdict]),
        BootTest("exception-loop-contained", Machine([guest("vectorless"), guest("smp", smp=2)], cpus=2), [
            r"vm0\| breaking my exception vectors", r"VM 0: stopping: crashed \(ExceptionLoop\)",
            r"vm1\| 2 vCPUs added 20000 each", r"VM 1: test verdict PASS", r"machine exit status 2"], status=2),
        BootTest("pauth-on", Machine([guest("pauth", bootargs="expect=1")]), [
            r"vm0\| pointer authentication available", *verdict]),
        BootTest("pauth-off", Machine([guest("pauth", bootargs="expect=0")], hv_args="vm0.pauth=off"), [
            r"vm0\| pointer authentication hidden", r"pointer authentication \(EC 0x9", *verdict]),
        # Lazy / adaptive / eager PAuth key switching (guest-tests/src/bin/pac.rs).
        BootTest("pac-never-used", Machine([guest("pac", bootargs="users=0 rounds=1 calls=3000 policy=1")]), [
            r"vm0\| vCPU 0 \(no PAC, adaptive\): 1 rounds, 0 reloads; pauth_traps=0 key_switch_exits=0", *verdict]),
        BootTest("pac-never-used-lazy", Machine([guest("pac", bootargs="users=0 rounds=1 calls=3000 policy=0")],
                                                hv_args="pauth_keys=lazy"), [
            r"vm0\| vCPU 0 \(no PAC, lazy\): 1 rounds, 0 reloads; pauth_traps=0 key_switch_exits=0", *verdict]),
        BootTest("pac-used-lazy", Machine([guest("pac", bootargs="users=1 rounds=50 calls=50 policy=0")], hv_args="pauth_keys=lazy"), [
            r"vm0\| vCPU 0 \(uses PAC, lazy\): 50 rounds, 0 reloads; pauth_traps=1 key_switch_exits=\d{4}", *verdict]),
        *[BootTest(f"pac-shared-vcpus-{name}", Machine([guest("pac", smp=3, bootargs=f"users=3 share=1 rounds=100 policy={p}")],
                                                       cpus=1, hv_args=f"overcommit=on pauth_keys={name}"), [
            rf"vm0\| vCPU 0 \(uses PAC, {name}\): 100 rounds", rf"vm0\| vCPU 1 \(uses PAC, {name}\): 100 rounds",
            rf"vm0\| vCPU 2 \(no PAC, {name}\): 100 rounds", r"vm0\| pac: all 3 vCPU\(s\) kept their own keys", *verdict])
          for p, name in enumerate(["lazy", "adaptive", "eager"])],
        BootTest("pac-shared-vms", Machine([guest("pac", bootargs=f"tag={t} share=1 rounds=100 policy=0") for t in (1, 2)],
                                           cpus=1, hv_args="pauth_keys=lazy"), [
            r"vm0\| vCPU 0 \(uses PAC, lazy\): 100 rounds", r"vm1\| vCPU 0 \(uses PAC, lazy\): 100 rounds",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        BootTest("pac-arbitrary-keys", Machine([guest("pac", smp=2, bootargs="users=3 share=1 rekey=1 rounds=300 calls=10 policy=1")],
                                               cpus=1, hv_args="overcommit=on"), [
            r"vm0\| vCPU 0 \(uses PAC, adaptive\): 300 rounds", r"vm0\| vCPU 1 \(uses PAC, adaptive\): 300 rounds", *verdict]),
        # A VM that reboots again and again (as a kernel that panics with panic=-1 does) is
        # stopped after 5 reboots within 10 s; the other VM is not disturbed.
        BootTest("reboot-loop-stopped", Machine([guest("reset", bootargs="loop=1"), guest("hello")], cpus=2), [
            r"VM 0: rebooted 5 times within 10 s, a crash-reboot loop", r"vm0\| boot 4", r"VM 1: test verdict PASS",
            r"machine exit status 2"], reject=[r"vm0\| boot 5", r"HYPERVISOR PANIC"], status=2),
        # A warm reset: RAM outside the images keeps what the first boot left, as on bare
        # QEMU (run there too).
        BootTest("reset", Machine([guest("reset")]), [
            r"VM 0: rebooting \(boot 1\)", r"vm0\| boot 1", r"vm0\| observe RAM outside the images after SYSTEM_RESET: 0x5eed000000000001",
            *verdict], compare_bare=True),
        BootTest("two-vms", Machine([guest("hello", smp=2), guest("hypercalls")], cpus=2), [
            r"vm0\| all 2 vCPU\(s\) reported", r"vm1\| 2000 random hypercalls answered",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        BootTest("shared-cpu", Machine([guest("switch", bootargs="tag=1"), guest("switch", bootargs="tag=2")], cpus=1), [
            r"vm0\| tag 1: registers intact across 100 waits", r"vm1\| tag 2: registers intact across 100 waits",
            r"VM 0: test verdict PASS", r"VM 1: test verdict PASS", r"machine exit status 0"]),
        # Neither guest touches FP/SIMD: their registers never move (lazy switching).
        BootTest("time-slicing", Machine([guest("busy", bootargs="ms=3000"), guest("hello")], cpus=1), [
            r"VM 1: test verdict PASS[\s\S]*vm0\| busy for 3000 ms[\s\S]*VM 0: test verdict PASS",
            r"VM 0 vCPU 0: .*loads=\d+ .*fp_loads=0\s", r"VM 1 vCPU 0: .*loads=\d+ .*fp_loads=0\s", r"machine exit status 0"]),
        # The hypervisor's own refusals (qemu.py's checks bypassed), with their exit statuses.
        BootTest("guest-not-an-image", Machine([Guest(kernel=qemu.ROOT / "Cargo.toml")]), [
            r"VM 0: cannot start: kernel is not an arm64 Image", r"machine exit status 2"], status=2, validate=False),
        BootTest("guest-too-big-for-host", Machine([guest("hello", mem=1024 * MIB)], host_mem=512 * MIB), [
            r"VM 0: cannot start: not enough host memory", r"machine exit status 2"], status=2),
        # RAM populated on first touch is committed at creation all the same: a second VM
        # that would overcommit the host is refused, the first runs.
        BootTest("lazy-memory-is-committed", Machine([guest("hello", mem=256 * MIB), guest("hello", mem=256 * MIB)], host_mem=512 * MIB), [
            r"VM 1: cannot start: not enough host memory", r"VM 0: test verdict PASS", r"machine exit status 2"], status=2),
        # start=wait: the second VM waits for memory and is built when the first stops (its
        # memory back); one that cannot fit even then is refused when nothing runs any more.
        BootTest("start-wait-for-memory", Machine([guest("hello", mem=256 * MIB), guest("hello", mem=256 * MIB)], host_mem=512 * MIB,
                                                  hv_args="vm1.start=wait"), [
            r"VM 1: waiting for memory \(start=wait\): it needs 256 MiB",
            r"VM 0: test verdict PASS[\s\S]*VM 1: there is memory for it now: starting[\s\S]*VM 1: test verdict PASS",
            r"machine exit status 0"]),
        BootTest("start-wait-never-fits", Machine([guest("hello", mem=256 * MIB), guest("hello", mem=1024 * MIB)], host_mem=512 * MIB,
                                                  hv_args="vm1.start=wait"), [
            r"VM 1: waiting for memory \(start=wait\): it needs 1024 MiB",
            r"VM 0: test verdict PASS[\s\S]*VM 1: cannot start: not enough host memory", r"machine exit status 2"], status=2, validate=False),
        BootTest("no-guest", Machine([]), [r"no guest given"], status=4, validate=False),
        # Crashes of the hypervisor itself (on purpose, debug_faults=on) are reported, and
        # end the machine with status 3.
        BootTest("hypervisor-panic", Machine([guest("crash", bootargs="fault=0")], hv_args="debug_faults=on"), [
            r"HYPERVISOR PANIC on cpu0: .*\n.*debug fault requested by a guest"], reject=[], status=3),
        BootTest("hypervisor-data-abort", Machine([guest("crash", bootargs="fault=1")], hv_args="debug_faults=on"), [
            r"hypervisor exception at EL2: synchronous", r"EC 0x25 \(data abort at EL2\)",
            r"data abort: translation fault .*read", r"ELR_EL2 0x0000000040", r"x30 0x", r"HYPERVISOR PANIC on cpu0"],
            reject=[], status=3),
        BootTest("hypervisor-stack-overflow", Machine([guest("crash", bootargs="fault=2")], hv_args="debug_faults=on"), [
            r"hypervisor exception at EL2: synchronous", r"stack overflow: cpu0's stack ran into its guard page",
            r"HYPERVISOR PANIC on cpu0"], reject=[], status=3),
        # The hypervisor signs its return addresses: a wrong APIA key at EL2 must crash loudly.
        BootTest("hypervisor-pac-key-wrong", Machine([guest("crash", bootargs="fault=3")], hv_args="debug_faults=on"), [
            r"return addresses signed with an APIA key from RNDR", r"hypervisor exception at EL2: synchronous",
            r"pointer authentication failed: a return address signed", r"HYPERVISOR PANIC on cpu0"], reject=[], status=3),
        BootTest("debug-faults-off-by-default", Machine([guest("crash", bootargs="fault=0")]), [
            r"vm0\| debug faults are refused", *verdict]),
        BootTest("failing-guest-fails-the-run", Machine([guest("psci", smp=1)], cpus=1), [
            r"check failed .* this test needs at least 2 vCPUs", r"test verdict FAIL", r"machine exit status 1"], status=1),
    ]


def linux(cpus: int, bootargs: str = "") -> Guest:
    """Debian's kernel with the test initramfs, running its checks (hvtest.cpus=N)."""
    return Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB, smp=cpus,
                 bootargs=bootargs or f"console=ttyAMA0 panic=-1 quiet hvtest.cpus={cpus}")


# VM 1 of linux-balloon: too big for the host while VM 0 holds its 300 MiB file, small
# enough once VM 0 reported it free.
BALLOON_WAITER = 750 * MIB


def balloon_gave_back(out: str) -> list[str]:
    """linux-balloon: between the two memory lines (the file held, then freed) the VM gave
    back about what it freed, and the host's free memory rose by about as much."""
    lines = re.findall(r"VM 0: 512 MiB RAM, (\d+) KiB given back to the host;.*host memory free for new VMs (\d+) MiB", out)
    if len(lines) != 2:
        return [f"{len(lines)} memory lines of VM 0, expected 2"]
    (given0, free0), (given1, free1) = [(int(g) >> 10, int(f)) for g, f in lines]
    print(f"    balloon: given back {given0} -> {given1} MiB, host free {free0} -> {free1} MiB")
    problems = []
    if not 240 <= given1 - given0 <= 330:
        problems.append(f"VM 0 gave back {given1 - given0} MiB after freeing 300 MiB")
    return problems


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# linux-net-uplink: the host's HTTP server the guests fetch from (through QEMU's 10.0.2.2),
# and the host port forwarded to the guest at 10.0.2.15.
UPLINK_HTTP_PORT = free_port()
UPLINK_FWD_PORT = free_port()
UPLINK_FILE = qemu.ROOT / "target" / "uplink-www" / "file"
_uplink_server: list = []


def start_uplink_server() -> None:
    """Serves a fresh 1 MiB random file at http://127.0.0.1:UPLINK_HTTP_PORT/file."""
    import functools
    import http.server
    import threading
    UPLINK_FILE.parent.mkdir(parents=True, exist_ok=True)
    UPLINK_FILE.write_bytes(os.urandom(1 << 20))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass
    handler = functools.partial(Quiet, directory=str(UPLINK_FILE.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", UPLINK_HTTP_PORT), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _uplink_server.append(server)


def connect_from_host() -> str:
    """linux-net-uplink's dialog: a connection from the host through the forwarded port."""
    import socket
    with socket.create_connection(("127.0.0.1", UPLINK_FWD_PORT), timeout=10) as sock:
        sock.sendall(b"PING-FROM-HOST")
    return ""


def uplink_fetched(out: str) -> list[str]:
    """Both guests fetched the host's file intact; the server stops."""
    import hashlib
    for server in _uplink_server:
        server.shutdown()
    _uplink_server.clear()
    md5 = hashlib.md5(UPLINK_FILE.read_bytes()).hexdigest()
    got = re.findall(r"vm\d\| UPLINK fetched (\d+) bytes, md5 (\w+)", out)
    if len(got) != 2 or any(g != (str(1 << 20), md5) for g in got):
        return [f"the guests fetched {got}, the file is {1 << 20} bytes with md5 {md5}"]
    return []


VBLK_DISK = qemu.ROOT / "target" / "test-vblk0.img"
VBLK_DISK2 = qemu.ROOT / "target" / "test-vblk1.img"


def fresh_vblk_disks() -> None:
    VBLK_DISK.parent.mkdir(parents=True, exist_ok=True)
    for path, size in [(VBLK_DISK, MIB), (VBLK_DISK2, 128 * 1024)]:
        with open(path, "wb") as f:
            f.truncate(size)
            f.write(b"VBLK-TEST-SECTOR-0")


DMA_DISK = qemu.ROOT / "target" / "test-dma.img"


def fresh_dma_disk() -> None:
    """8 MiB, each sector starting with its number plus one (little-endian u64)."""
    DMA_DISK.parent.mkdir(parents=True, exist_ok=True)
    sector = bytearray(512)
    with open(DMA_DISK, "wb") as f:
        for n in range(8 * MIB // 512):
            sector[0:8] = (n + 1).to_bytes(8, "little")
            f.write(sector)


DISK = qemu.ROOT / "target" / "test-disk.img"
DISK_RO = qemu.ROOT / "target" / "test-disk-ro.img"
DISK_VM1 = qemu.ROOT / "target" / "test-disk-vm1.img"


def fresh_disk() -> None:
    """A 4 MiB disk image with a pattern in its first sector, and a 1 MiB one to attach
    read-only."""
    DISK.parent.mkdir(parents=True, exist_ok=True)
    for path, size, pattern in [(DISK, 4 * MIB, b"HVDISK-TEST-PATTERN"), (DISK_RO, MIB, b"READ-ONLY-PATTERN"),
                                (DISK_VM1, 2 * MIB, b"HVDISK-VM1-PATTERN!")]:
        with open(path, "wb") as f:
            f.truncate(size)
            f.write(pattern)


BAD_DISK = qemu.ROOT / "target" / "test-disk-failing.img"
BLKDEBUG = qemu.ROOT / "target" / "test-disk-failing.cfg"


def failing_disk() -> None:
    """A disk whose every read fails on the host (QEMU's blkdebug: EIO on read_aio)."""
    BAD_DISK.parent.mkdir(parents=True, exist_ok=True)
    with open(BAD_DISK, "wb") as f:
        f.truncate(MIB)
    BLKDEBUG.write_text('[inject-error]\nevent = "read_aio"\nerrno = "5"\n')


def disk_written() -> list[str]:
    """What the guest wrote to sector 8 reached the image file."""
    with open(DISK, "rb") as f:
        f.seek(8 * 512)
        got = f.read(20)
    problems = [] if got == b"WRITTEN-BY-THE-GUEST" else [f"sector 8 of the image holds {got!r}"]
    with open(DISK_RO, "rb") as f:
        ro = f.read(MIB)
    if ro[:17] != b"READ-ONLY-PATTERN" or ro[17:].strip(b"\0"):
        problems.append("the read-only disk changed")
    return problems


def disks_of_two_vms_written() -> list[str]:
    """Each VM's write landed in its own image."""
    problems = []
    for path in (DISK, DISK_VM1):
        with open(path, "rb") as f:
            f.seek(8 * 512)
            if (got := f.read(20)) != b"WRITTEN-BY-THE-GUEST":
                problems.append(f"sector 8 of {path.name} holds {got!r}")
    return problems


ROOTFS = qemu.ROOT / "target" / "test-rootfs.img"
E2FSCK = shutil.which("e2fsck") or "/usr/sbin/e2fsck"
DEBUGFS = shutil.which("debugfs") or "/usr/sbin/debugfs"


def fresh_rootfs() -> None:
    subprocess.run(["bash", str(qemu.ROOT / "scripts" / "mkrootfs.sh"), str(ROOTFS), "32M"], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=600)


def rootfs_clean_and_counted() -> list[str]:
    """The guest's filesystem is clean (e2fsck -fn) and says it booted twice."""
    fsck = subprocess.run([E2FSCK, "-fn", str(ROOTFS)], capture_output=True, text=True, timeout=120)
    problems = [] if fsck.returncode == 0 else [f"e2fsck -fn: status {fsck.returncode}: {fsck.stdout[-300:]}"]
    boots = subprocess.run([DEBUGFS, "-R", "cat /var/boots", str(ROOTFS)], capture_output=True, text=True, timeout=60)
    if boots.stdout.strip() != "2":
        problems.append(f"/var/boots holds {boots.stdout.strip()!r}, not 2")
    return problems


def linux_tests() -> list[BootTest]:
    checks = [r"CHECK cpus: ok", r"CHECK timer: ok", r"CHECK ipi: ok", r"CHECK debug: ok \(hw-breakpoint: 6 4\)", r"CHECK pmu: ok \(hw perfevents: armv8_pmuv3 7\)", r"CHECK perf: ok \(PERFCOUNT cycles=\d+ instructions=-2\)", r"CHECK sve: ok",
              r"CHECK pauth: ok", r"LINUX TESTS DONE: 0 failed"]
    return [
        # Adaptive (default) PAuth keys: Linux signs all the time, so one trap, then switches.
        # Guest RAM on first touch in 2 MiB blocks (the default): tens of stage-2 faults
        # populate thousands of pages; every frame back.
        BootTest("linux-1cpu", Machine([linux(1)], cpus=2), [rf"vm0\| {c}" for c in checks] + [
            r"VM 0 vCPU 0: .* pauth_traps=1 key_switch_exits=[1-9]\d* .*loads=1 keys_live=0 fp_loads=1\s", r"populated on first touch, 2 MiB blocks; stage-2 leaves: pages",
            r"VM 0 memory: s2_faults=(\d{1,3}) .*populated=\d{4,} ", NO_LEAK, r"machine exit status 0"], linux=True),
        # Lazy keys with two vCPUs time-sliced on one CPU: a trap at (nearly) every load.
        # Also RAM on first touch page by page: thousands of stage-2 faults, every frame back.
        BootTest("linux-pauth-lazy-shared-cpu", Machine([linux(2)], cpus=1, hv_args="overcommit=on pauth_keys=lazy blocks=off"),
                 [rf"vm0\| {c}" for c in checks] + [
                  r"VM 0 vCPU 0: .* pauth_traps=(\d{2,}) key_switch_exits=[1-9]\d* plain_exits=\d+ loads=\d{2,}",
                  r"populated on first touch, 4 KiB pages", r"VM 0 memory: s2_faults=(\d{4,}) .*populated=\d{4,} ", NO_LEAK,
                  r"machine exit status 0"], linux=True),
        # A guest disk: the host disk vm0-disk0 as a virtio-blk device in slot 31; the guest
        # reads the pattern the test wrote, writes a sector that lands in the image file.
        BootTest("linux-disk", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                              bootargs="console=ttyAMA0 panic=-1 quiet hvtest.disk", disks=[qemu.Disk(DISK), qemu.Disk(DISK_RO, True)])]), [
            r"virtio-blk at 0x[0-9a-f]+ \(serial \"vm0-disk0\", 4096 KiB\): disk 0 of VM 0",
            r"VM 0: disk \"vm0-disk0\" \(4096 KiB\) in virtio-mmio slot 31 \(SPI 47\)",
            r"vm0\| DISK vda: 8192 sectors, serial vm0-disk0, ro 0", r"vm0\| DISK first sector: HVDISK-TEST-PATTERN",
            # Negotiated: SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, DISCARD, WRITE_ZEROES, indirect
            # descriptors, EVENT_IDX.
            r"vm0\| DISK vda features: 0110001001[01]{3}11[01]{13}11",
            r"vm0\| DISK sector 8 read back: WRITTEN-BY-THE-GUEST",
            r"vm0\| DISK discard of 4 KiB: ok", r"vm0\| DISK write-zeroes up to [1-9]\d+ bytes",
            r"VM 0: disk \"vm0-disk1\" \(1024 KiB, read-only\) in virtio-mmio slot 30 \(SPI 46\)",
            r"vm0\| DISK vdb: 2048 sectors, serial vm0-disk1, ro 1", r"vm0\| DISK vdb first sector: READ-ONLY-PATTERN",
            r"vm0\| DISK vdb write refused", r"machine exit status 0"], linux=True,
                 before=fresh_disk, after=disk_written),
        # The guest's own pstore: Linux's ramoops in the region the device tree reserves keeps
        # the crashed kernel's record across the reboot (a warm reset keeps the VM's RAM).
        # The entropy device (virtio-rng, RNDR): Linux's hw_random uses it; and none with rng=off.
        BootTest("linux-rng", Machine([linux(1, "console=ttyAMA0 panic=-1 quiet hvtest.rng")]), [
            r"VM 0: entropy device \(virtio-rng, RNDR\) in virtio-mmio slot 1 \(SPI 17\)",
            r"vm0\| RNG current: virtio_rng\.\d", r"vm0\| RNG read 4096 bytes; another 4 KiB has 2[2-5]\d distinct byte values", r"vm0\| RNG \[ *\d+\.\d+\] random: crng init done",
            r"VM 0 entropy device: bytes=(819[2-9]|8[2-9]\d\d|9\d{3}|\d{5,})\b", r"machine exit status 0"], linux=True),
        # The memory balloon with Linux's virtio_balloon: free page reporting gives what the
        # guest frees back to the host (its 300 MiB file deleted: the host's free memory rises
        # by about as much, and VM 1, which waited for memory, starts); the balloon inflates to
        # the target at boot (64 MiB) and deflates when the console's Ctrl-] + moves it to 0;
        # the guest's statistics reach the VM's counters; the guest goes on using its memory.
        BootTest("linux-balloon", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=512 * MIB,
                                                 bootargs="console=ttyAMA0 panic=-1 quiet hvtest.balloon"),
                                           guest("hello", mem=BALLOON_WAITER)], host_mem=1024 * MIB,
                                          hv_args="vm0.balloon=64M vm1.balloon=off vm1.start=wait"), [
            r"VM 0: memory balloon \(virtio-balloon, free page reporting\) in virtio-mmio slot 2 \(SPI 18\), target 64 MiB",
            r"VM 1: waiting for memory \(start=wait\)", r"vm0\| BALLOON holding 300 MiB",
            r"vm0\| BALLOON device virtio\d features [01]{1}11[01]{2}1",
            r"VM 0: balloon target 0 MiB \(was 64 MiB, the guest holds 64 MiB in it\)",
            r"vm0\| BALLOON settled[\s\S]*VM 1: there is memory for it now: starting[\s\S]*VM 1: test verdict PASS", r"vm0\| BALLOON freed 300 MiB",
            r"vm0\| BALLOON used 64 MiB again: read back the same",
            r"VM 0 balloon: target=0KiB actual=0KiB inflated_pages=16384 deflated_pages=16384 reports=[1-9]\d* .* stats_updates=[1-9]\d* .*guest_free_memory=\d+ .*guest_total_memory=\d+",
            r"all VMs stopped; machine exit status 0"], linux=True, raw=False,
                 dialog=[(r"BALLOON settled", "\x1dm\x1d+", 0.3), (r"BALLOON freed", "\x1dm", 0.3)], check_log=balloon_gave_back,
                 timeout=120),
        # Deflate on OOM: 160 of the guest's 256 MiB in the balloon, then 150 MiB written to a
        # tmpfs file: Linux takes pages back from the balloon instead of killing anything (it
        # inflates at least the 40,960 pages of the target; more when it refills after a
        # deflation).
        BootTest("linux-balloon-oom", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                                     bootargs="console=ttyAMA0 panic=-1 quiet hvtest.balloon_oom")],
                                              hv_args="vm0.balloon=160M"), [
            r"vm0\| BALLOON OOM before: MemFree: \d+ kB", r"vm0\| BALLOON OOM wrote 150 MiB",
            r"VM 0 balloon: target=163840KiB actual=\d+KiB inflated_pages=(4\d{4}|[5-9]\d{4}|\d{6,}) deflated_pages=[1-9]\d* ",
            r"all VMs stopped; machine exit status 0"], reject=[r"HYPERVISOR PANIC", r"Out of memory", r"Kernel panic"], linux=True),
        # Two VMs on the hypervisor's switch (VM 1's card on the legacy interface): static
        # addresses, pings both ways, a 4 MiB file sent with busybox nc arrives with the same
        # checksum.
        BootTest("linux-net-two-vms", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                                     bootargs=f"console=ttyAMA0 panic=-1 quiet hvtest.net={me},{peer},{role}",
                                                     virtio_legacy=legacy)
                                               for me, peer, role, legacy in (("10.0.0.1", "10.0.0.2", "send", False),
                                                                              ("10.0.0.2", "10.0.0.1", "receive", True))],
                                              hv_args="net=on"), [
            r"VM 0: network card \(virtio-net, MAC 52:54:00:ab:00:00\) in virtio-mmio slot 3 \(SPI 19\) on the switch",
            r"vm0\| NET eth0 52:54:00:ab:00:00 mtu 1500 features 11010100000000011000000000001100100", r"vm1\| NET eth0 52:54:00:ab:00:01 mtu 1500 features 11010100000000011000000000001100000",
            r"vm0\| NET ping 10.0.0.2: 5 packets transmitted, 5 packets received", r"vm1\| NET ping 10.0.0.1: 5 packets transmitted, 5 packets received",
            r"vm0\| NET sending 4194304 bytes, md5 (\w+)[\s\S]*vm1\| NET received 4194304 bytes, md5 \1",
            r"all VMs stopped; machine exit status 0"], linux=True),
        # The same while a third VM floods the switch with garbage (bad lengths, spoofed and
        # random addresses, headers asking for what was not negotiated, chains outside its
        # RAM) and never receives: the two still talk; the flooder's frames are refused and
        # counted, what is sent to it waits in its bounded backlog (dropped when full, emptied
        # at its resets), nobody waits for it.
        BootTest("linux-net-flood", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                                   bootargs=f"console=ttyAMA0 panic=-1 quiet hvtest.net={me},{peer},{role}")
                                             for me, peer, role in (("10.0.0.1", "10.0.0.2", "send"), ("10.0.0.2", "10.0.0.1", "receive"))]
                                            + [guest("netflood", bootargs="ms=25000")], hv_args="net=on"), [
            r"vm0\| NET sending 4194304 bytes, md5 (\w+)[\s\S]*vm1\| NET received 4194304 bytes, md5 \1",
            r"vm2\| flooded \d{4,} frames, [1-9]\d* broke the queue",
            r"VM 2: network card: a transmitted frame refused: (TooShort|TooLong|BadHeader)",
            r"VM 2: network card: a frame from another card's address",
            r"VM 2 network card: tx_frames=[1-9]\d* tx_bytes=\d+ tx_refused=[1-9]\d* tx_spoofed=[1-9]\d* rx_frames=0 rx_bytes=0 rx_dropped=\d+ backlog=\d+",
            r"VM 2: test verdict PASS", r"all VMs stopped; machine exit status 0"], linux=True),
        # The switch's uplink: QEMU gives the hypervisor a virtio-net card with user networking;
        # two Linux VMs get addresses by DHCP through it, fetch a file from an HTTP server on
        # the host (10.0.2.2) intact, and a connection from the host reaches the VM at
        # 10.0.2.15 through QEMU's hostfwd.
        BootTest("linux-net-uplink", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                                    bootargs=f"console=ttyAMA0 panic=-1 quiet hvnet=dhcp hvtest.uplink={UPLINK_HTTP_PORT}")] * 2,
                                             net=True, hostfwd=[f"tcp:127.0.0.1:{UPLINK_FWD_PORT}-10.0.2.15:7000"]), [
            r"virtio-net at 0x[0-9a-f]+ \(MAC 52:54:00:12:34:56\): the uplink of the VMs' switch",
            r"vm\d\| NET eth0 10\.0\.2\.15/24 \(DHCP\), gateway 10\.0\.2\.2", r"vm\d\| NET eth0 10\.0\.2\.16/24 \(DHCP\), gateway 10\.0\.2\.2",
            r"vm\d\| UPLINK from the host: PING-FROM-HOST", r"all VMs stopped; machine exit status 0"], linux=True,
                 before=start_uplink_server, check_log=uplink_fetched, dialog=[(r"UPLINK listening on 7000", connect_from_host, 1.0)]),
        BootTest("linux-rng-off", Machine([linux(1, "console=ttyAMA0 panic=-1 quiet hvtest.rng")], hv_args="rng=off"), [
            r"vm0\| RNG no virtio_rng", r"machine exit status 0"], linux=True),
        # With the region divided otherwise than by default (ramoops=R,C,F,P KiB): Linux's
        # ramoops takes the device tree's sizes.
        BootTest("linux-ramoops", Machine([linux(1, "console=ttyAMA0 panic=-1 quiet hvtest.ramoops")], hv_args="ramoops=128,32,16,8"), [
            r"vm0\| RAMOOPS sizes: record 131072 console 32768 ftrace 16384 pmsg 8192 of 1048576",
            r"vm0\| RAMOOPS empty: crashing on purpose", r"VM 0: rebooting \(boot 1\)",
            r"vm0\| RAMOOPS records: dmesg-ramoops-0", r"vm0\| RAMOOPS panic message: sysrq triggered crash",
            r"machine exit status 0"], linux=True),
        # Root on a disk: the initramfs loads virtio and ext4 and switches to the ext4 image
        # `make rootfs` builds; its init counts boots in a file, reboots once (a warm reset),
        # finds the count, powers off; the image is clean for e2fsck afterwards.
        BootTest("linux-rootfs", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                                bootargs="console=ttyAMA0 panic=-1 quiet hvroot=/dev/vda hvtest.rootfs",
                                                disks=[qemu.Disk(ROOTFS)])]), [
            r"vm0\| ROOTFS READY: busybox on /dev/vda \(/dev/vda ext4\)", r"vm0\| ROOTFS boot 1: 1 line",
            r"VM 0: rebooting \(boot 1\)", r"vm0\| ROOTFS boot 2: 2 line", r"machine exit status 0"], linux=True,
                 before=fresh_rootfs, after=rootfs_clean_and_counted),
        # A host disk whose reads fail: the guest gets I/O errors in its log, not a hang.
        BootTest("linux-disk-failing", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                                                      bootargs="console=ttyAMA0 panic=-1 hvtest.disk")],
                                               extra=["-drive", f"if=none,id=bad,format=raw,file=blkdebug:{BLKDEBUG}:{BAD_DISK}",
                                                      "-device", "virtio-blk-device,drive=bad,serial=vm0-disk0"]), [
            r"virtio-blk at 0x[0-9a-f]+ \(serial \"vm0-disk0\", 1024 KiB\): disk 0 of VM 0",
            r"vm0\| \[ *[\d.]+\] I/O error, dev vda, sector 0 op 0x0:\(READ\)", r"vm0\| DISK vda: 2048 sectors",
            r"(?m)vm0\| DISK first sector: \r?$", r"machine exit status 0"], linux=True, before=failing_disk),
        # Two VMs, each with its own disk (VM 1's on the legacy virtio-mmio interface): each
        # finds only its own (serial, size, pattern), and each write lands in its own image.
        BootTest("linux-two-vms-disks", Machine([
            Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                  bootargs="console=ttyAMA0 panic=-1 quiet hvtest.disk", disks=[qemu.Disk(DISK)]),
            Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=256 * MIB,
                  bootargs="console=ttyAMA0 panic=-1 quiet hvtest.disk", disks=[qemu.Disk(DISK_VM1)], virtio_legacy=True)],
                                              cpus=2), [
            r"vm0\| DISK vda: 8192 sectors, serial vm0-disk0, ro 0", r"vm0\| DISK first sector: HVDISK-TEST-PATTERN",
            r"vm1\| DISK vda: 4096 sectors, serial vm1-disk0, ro 0", r"vm1\| DISK first sector: HVDISK-VM1-PATTERN!",
            r"vm0\| DISK sector 8 read back: WRITTEN-BY-THE-GUEST", r"vm1\| DISK sector 8 read back: WRITTEN-BY-THE-GUEST",
            r"machine exit status 0"], reject=[r"vm\d\| DISK vdb", r"HYPERVISOR PANIC"], linux=True,
                 before=fresh_disk, after=disks_of_two_vms_written),
        # Also booted directly by QEMU: every check has the same outcome there.
        BootTest("linux-4cpu", Machine([linux(4)], cpus=4), [rf"vm0\| {c}" for c in checks] + [r"machine exit status 0"], linux=True,
                 compare_bare=True),
        # The console as `make run` shows it: the prompt before any key, echo as typed, a
        # controlling terminal (Ctrl-C stops `sleep 100`, no "can't access tty"), the UART's
        # interrupt, a serial break (QEMU's Ctrl-A b) then, a second later as a person would
        # type it, h: Magic SysRq's help.
        BootTest("linux-console-input", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio",
                                                       mem=256 * MIB, smp=2, bootargs="console=ttyAMA0 panic=-1 quiet")], cpus=2),
                 [r"\n/ # (\x1b\[6n)?echo typed-\$\(\(6\*7\)\)\r?\n", r"\ntyped-42\r?\n", r"\nafter-42\r?\n",
                  r"\npasted-42-(0123456789){60}-end\r?\n",
                  r"GICv3 +33 Level +uart-pl011", r"sysrq: HELP", r"machine exit status 0"],
                 reject=[r"can't access tty", r"vm0\| ", r"HYPERVISOR PANIC"], linux=True, raw=True,
                 dialog=[(PROMPT, "echo typed-$((6*7))\r", 0.3), (r"\ntyped-42", "sleep 100\r", 0.3), (r"sleep 100\r?\n", "\x03", 0.5),
                         (r"\^C", "echo after-$((6*7))\r", 0.3),
                         # A pasted line, in one write, longer than the UART's receive buffer.
                         (r"\nafter-42", "echo pasted-$((6*7))-" + "0123456789" * 60 + "-end\r", 0.3),
                         (r"\npasted-42-", "grep uart /proc/interrupts\r", 0.3),
                         (r"uart-pl011[^/]*" + PROMPT, "\x01b", 0.3), (PROMPT, "h", 1.0), (r"sysrq: HELP", "poweroff -f\r", 0.3)]),
        # The panic is recorded in pstore once, with the whole report (the call trace comes
        # after the panic line).
        BootTest("linux-panic-contained", Machine([linux(1, "console=ttyAMA0 panic=0 quiet hvtest.panic"), linux(1)], cpus=2,
                                                  pstore=pstoretest.fresh_disk("linux-panic-contained")),
                 [r"vm0\| .*sysrq: Trigger a crash", r"VM 0: guest kernel panic: .*Kernel panic - not syncing",
                  r"pstore: VM 0 crash recorded in dmesg-pstore_blk-0 \(Panic #1, \d+ us\): its kernel panicked: sysrq triggered crash",
                  r"VM 0: stopping: crashed \(GuestPanic\)", *[rf"vm1\| {c}" for c in checks], r"machine exit status 2"],
                 reject=[r"HYPERVISOR PANIC", r"crash recorded in dmesg-pstore_blk-1"], status=2, linux=True),
        # Two VMs: VM 0 has the focus (raw), VM 1's lines are prefixed; Ctrl-] 7 (no such VM)
        # is refused, Ctrl-] 1 moves the focus; when VM 1 stops, the focus comes back to VM 0.
        BootTest("linux-console-focus", Machine([linux(1, "console=ttyAMA0 panic=-1 quiet"), linux(1, "console=ttyAMA0 panic=-1 quiet")], cpus=2),
                 [r"\nfirst-42\r?\n", r"there is no VM 7; input stays with VM 0", r"console input now goes to VM 1\r?\n",
                  r"\nsecond-42\r?\n", r"VM 1: stopped(?s:.*)console input now goes to VM 0 \(VM 1 stopped\)", r"machine exit status 0"],
                 reject=[r"vm1\| first-42", r"vm0\| second-42", r"HYPERVISOR PANIC"], linux=True, raw=True,
                 dialog=[(r"vm1\| INITRAMFS READY", ""), (PROMPT, "echo first-$((6*7))\r", 0.3), (r"\nfirst-42", "\x1d7", 0.3),
                         (r"there is no VM 7", "\x1d1echo second-$((6*7))\r", 0.5), (r"\nsecond-42", "poweroff -f\r", 0.3),
                         (r"console input now goes to VM 0", "poweroff -f\r", 0.5)]),
        # Too little memory for the kernel to boot: it panics (out of memory) and reboots
        # (panic=-1), 3.6 s a boot: the third such boot in a row stops the VM.
        BootTest("linux-too-little-memory", Machine([Guest(kernel=LINUX / "Image", initrd=LINUX / "initramfs.cpio", mem=48 * MIB,
                                                           bootargs="console=ttyAMA0 panic=-1 quiet")]),
                 [r"VM 0: guest kernel panic: .*System is deadlocked on memory", r"VM 0: rebooting \(boot 2\)",
                  r"VM 0: its kernel panicked in 3 boots in a row, a crash-reboot loop", r"machine exit status 2"],
                 reject=[r"VM 0: rebooting \(boot 3\)", r"HYPERVISOR PANIC"], status=2, linux=True),
        BootTest("linux-pauth-off", Machine([linux(1, "console=ttyAMA0 panic=-1 quiet hvtest.cpus=1 hvtest.nopauth")], cpus=2,
                                            hv_args="vm0.pauth=off"),
                 [rf"vm0\| {c}" for c in checks if "pauth" not in c] + [r"vm0\| CHECK no-pauth: ok", r"machine exit status 0"],
                 linux=True),
        BootTest("linux-two-vms", Machine([linux(1), linux(1)], cpus=2),
                 [rf"vm{v}\| {c}" for v in (0, 1) for c in checks] + [r"machine exit status 0"], linux=True),
        # Four vCPUs on two CPUs: each CPU time-slices between the two VMs.
        BootTest("linux-two-vms-shared-cpus", Machine([linux(2), linux(2)], cpus=2),
                 [rf"vm{v}\| {c}" for v in (0, 1) for c in checks] + [r"machine exit status 0"], linux=True),
        # Guest RAM allocated and mapped with 2 MiB stage-2 blocks up front (the default is on
        # first touch, in 4 KiB stage-2 pages, which every other Linux test uses): no stage-2
        # faults at all.
        BootTest("linux-eager-memory", Machine([linux(2)], cpus=2, hv_args="populate=eager s2leaf=block"),
                 [rf"vm0\| {c}" for c in checks] + [r"RAM at IPA 0x40000000 \(populated; stage-2 leaves: blocks\)",
                  r"VM 0 memory: s2_faults=0 .*populated=0 ", NO_LEAK, r"machine exit status 0"], linux=True),
    ]


def input_tests() -> list[InputTest]:
    hello = f"KERNEL={IMAGES / 'hello.bin'}"
    big = LOGS / "initrd-8M"
    with big.open("wb") as f:
        f.truncate(8 * MIB)
    elf = qemu.HYPERVISOR_ELF.parent / "hello"
    tiny = LOGS / "disk-100-bytes"
    tiny.write_bytes(b"x" * 100)
    return [
        InputTest("missing-kernel", ["KERNEL=/nonexistent/Image"], r"kernel '/nonexistent/Image' does not exist"),
        InputTest("kernel-not-an-image", [f"KERNEL={qemu.ROOT / 'Cargo.toml'}"], r"is not an arm64 Image"),
        InputTest("kernel-is-an-elf", [f"KERNEL={elf}"], r"is an ELF file \(vmlinux\?\): pass the Image"),
        InputTest("missing-initrd", [hello, "INITRD=/nonexistent/initrd"], r"initrd '/nonexistent/initrd' does not exist"),
        InputTest("initrd-larger-than-memory", [hello, f"INITRD={big}", "MEM=4M"],
                  r"kernel and initrd need \d+ MiB but the guest has MEM=4M"),
        InputTest("smp-larger-than-cpus", [hello, "SMP=4", "CPUS=2"], r"SMP=4 is larger than the CPUs \(CPUS=2\)"),
        InputTest("smp-larger-than-the-machine", [hello, "SMP=12"], r"^error: SMP=12: the machine has at most 8 CPUs"),
        InputTest("smp-zero", [hello, "SMP=0"], r"SMP=0: use 1 to 64"),
        InputTest("vms-zero", [hello, "VMS=0"], r"VMS=0: use 1 to 8"),
        InputTest("memory-too-small", [hello, "MEM=1"], r"MEM=1 MiB: guest memory must be a multiple of 2M and at least 4M"),
        InputTest("memory-beyond-the-host", [hello, "MEM=100000G"], r"MEM=100000G: the guests need [\d.]+ GiB but this host has"),
        InputTest("bad-memory-size", [hello, "MEM=lots"], r"MEM=lots is not a size"),
        InputTest("bad-smp", [hello, "SMP=two"], r"SMP=two is not a number"),
        # Sizes as QEMU's -m takes them: a plain number is MiB.
        InputTest("memory-in-mib", [hello, "MEM=512"], r"vm0\.mem=512M ", status=0),
        # The guest's command line exactly as given: nothing in it reaches a shell.
        InputTest("append-as-written", [hello, 'APPEND=x=`id` $HOME \'q\' dyndbg="file foo.c +p"'],
                  r"bootargs=x=`id` \$HOME 'q' dyndbg=\"file foo\.c \+p\"", status=0),
        InputTest("qemu-extra", [hello, "QEMU_EXTRA=-rtc base=2020-01-01 -name 'a b'"], r" -rtc base=2020-01-01 -name a b$",
                  status=0),
        # Disks: each becomes VM 0's vmN-diskM; bad ones are refused.
        InputTest("disks", [hello, f"DISK={big} {big}:ro"], rf"file={big} -device virtio-blk-device,drive=vm0d0,serial=vm0-disk0 "
                  rf"-drive if=none,id=vm0d1,format=raw,file={big},readonly=on -device virtio-blk-device,drive=vm0d1,serial=vm0-disk1",
                  status=0),
        InputTest("missing-disk", [hello, "DISK=/nonexistent/disk.img"], r"disk '/nonexistent/disk.img' does not exist"),
        InputTest("root-with-own-kernel", [hello, f"DISK={big}", "ROOT=/dev/vda"], r"ROOT=/dev/vda is for the default kernel's initramfs"),
        InputTest("root-not-a-disk", [f"DISK={big}", "ROOT=/dev/sda"], r"ROOT=/dev/sda: use /dev/vda for the first DISK"),
        InputTest("root-beyond-the-disks", [f"DISK={big}", "ROOT=/dev/vdb"], r"ROOT=/dev/vdb but DISK gives 1 disk"),
        InputTest("root", [f"DISK={big}", "ROOT=/dev/vda"], r"bootargs=console=ttyAMA0 panic=-1 hvroot=/dev/vda", status=0),
        InputTest("net-unknown", ["NET=tap"], r"NET=tap: use NET=user"),
        InputTest("hostfwd-without-net", ["HOSTFWD=tcp:127.0.0.1:2222-:22"], r"HOSTFWD needs NET=user"),
        InputTest("hostfwd-malformed", ["NET=user", "HOSTFWD=tcp:2222:22"], r"HOSTFWD=tcp:2222:22: use PROTO:HOSTADDR:PORT-GUESTADDR:PORT"),
        InputTest("net", ["NET=user", "HOSTFWD=tcp:127.0.0.1:2222-:22"],
                  r"-netdev user,id=uplink,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-device,netdev=uplink .*net=on.*hvnet=dhcp", status=0),
        InputTest("disk-is-a-directory", [hello, f"DISK={LOGS}"], rf"disk '{LOGS}' is a directory"),
        InputTest("disk-smaller-than-a-sector", [hello, f"DISK={tiny}"], rf"disk '{tiny}' is smaller than a sector"),
    ]


def run_boot(t: BootTest, timeout: float) -> tuple[bool, str]:
    if t.linux and (why := qemu.fetch_linux()):
        return False, f"no Linux guest: {why}"
    log = LOGS / f"{t.name}.log"
    if t.before:
        t.before()
    t.machine.console_prefix = not t.raw
    r = qemu.run(qemu.command(t.machine, validate=t.validate), timeout, log=log, dialog=t.dialog)
    problems = []
    if r.unanswered:
        problems.append(f"never saw /{r.unanswered}/ to answer")
    if r.hung:
        problems.append(f"hung: no exit within {timeout:.0f} s")
    elif r.status != t.status:
        problems.append(f"exit status {r.status}, expected {t.status}")
    problems += [f"missing /{x}/" for x in t.expect if not re.search(x, r.out)]
    problems += [f"unexpected /{x}/" for x in t.reject if re.search(x, r.out)]
    if t.compare_bare:
        problems += compare_with_bare(t, r.out, timeout)
    if t.after and not r.hung:
        problems += t.after()
    if t.check_log and not r.hung:
        problems += t.check_log(r.out)
    return not problems, "; ".join(problems) + (f" (log: {log})" if problems else "")


def observations(out: str) -> list[str]:
    """What a differential test compares: the test guests' `observe ...` lines, and the
    names and outcomes of the Linux guest's checks (their details hold times and counts)."""
    found = []
    for line in out.splitlines():
        line = re.sub(r"^vm\d+\| ", "", line.rstrip("\r"))
        if line.startswith("observe "):
            found.append(line)
        elif m := re.match(r"CHECK [\w-]+: (ok|FAIL)\b", line):
            found.append(m.group(0))
    return found


def compare_with_bare(t: BootTest, out: str, timeout: float) -> list[str]:
    """Runs the test's guest directly on QEMU (no hypervisor, same CPU model, memory and
    vCPUs) and compares what both runs observed. A difference is a fidelity bug."""
    g = t.machine.guests[0]
    log = LOGS / f"{t.name}-bare.log"
    bare = qemu.run(qemu.direct_command(g, g.smp), timeout, log=log)
    if bare.hung:
        return [f"hung on bare QEMU (log: {log})"]
    ours, theirs = observations(out), observations(bare.out)
    if not theirs:
        return [f"no observations on bare QEMU (log: {log})"]
    diff = [f"'{a}' here, '{b}' on bare QEMU" for a, b in zip(ours, theirs) if a != b]
    if len(ours) != len(theirs):
        diff.append(f"{len(ours)} observations here, {len(theirs)} on bare QEMU")
    return [f"differs from bare QEMU: {d}" for d in diff] + ([f"(bare log: {log})"] if diff else [])


def run_input(t: InputTest) -> tuple[bool, str]:
    try:
        # The options as make's own arguments (no shell in between), the way a user gives them.
        p = subprocess.run(["make", "-s", "--no-print-directory", "print", *t.args], cwd=qemu.ROOT,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, "hung: make print did not answer within 60 s"
    if p.returncode != t.status:
        return False, f"exit status {p.returncode}, expected {t.status} (stderr: {p.stderr.strip()})"
    if t.status:
        # One line of ours (make adds its own "make: *** ... Error 2" after it, "make[1]: ..."
        # when make test runs this).
        text = "\n".join(line for line in p.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line))
        if len(text.splitlines()) != 1:
            return False, f"not one line: {text}"
    else:
        # The command line as QEMU gets it (qemu.py prints it shell-quoted).
        text = " ".join(shlex.split(p.stdout))
    if not re.search(t.message, text, re.M):
        return False, f"/{t.message}/ not in: {text}"
    return True, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds each boot may take")
    a = ap.parse_args()
    LOGS.mkdir(parents=True, exist_ok=True)
    passed = failed = 0
    for t in [*boot_tests(), *pstoretest.pstore_tests(), *linux_tests(), *pty_tests(), *input_tests()]:
        if a.k not in t.name:
            continue
        start = time.monotonic()
        try:
            if isinstance(t, pstoretest.PstoreTest):
                problems = t.run(t.name)
                ok, why = not problems, "; ".join(problems) + (f" (logs: {LOGS}/{t.name}*)" if problems else "")
            elif isinstance(t, PtyTest):
                ok, why = run_pty(t, a.timeout)
            else:
                ok, why = run_boot(t, max(a.timeout, t.timeout or 0)) if isinstance(t, BootTest) else run_input(t)
        except UserError as e:
            ok, why = False, f"could not build the machine: {e}"
        except pstoretest.TestFailure as e:
            ok, why = False, f"{e} (logs: {LOGS}/{t.name}*)"
        kind = "input" if isinstance(t, InputTest) else "boot"
        print(f"{'PASS' if ok else 'FAIL'} {kind}/{t.name} ({time.monotonic() - start:.1f}s){'' if ok else ': ' + why}", flush=True)
        passed += ok
        failed += not ok
    print(f"boot: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
