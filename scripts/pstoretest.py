"""Boot tests of the pstore disk (run by boottest.py): records written by the hypervisor
for guest and hypervisor panics and read back by the host tool (pstore-tool, the same
format code), listed by the next boot, corrupted disks, the version-2 transport, a disk
that is not ours left alone, and QEMU killed at random moments while records are written.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import qemu
from qemu import IMAGES, LOGS, Guest, Machine

TOOL = qemu.ROOT / "target" / "debug" / "pstore-tool"
_tool_built = False


class TestFailure(Exception):
    """A pstore test cannot go on (a boot hung, the host tool failed): the harness reports
    it as the test's failure."""


def tool(*args: str) -> subprocess.CompletedProcess:
    """Runs the host tool (built once per test run with the host's cargo)."""
    global _tool_built
    try:
        if not _tool_built:
            subprocess.run(["cargo", "build", "-q", "-p", "hv-core", "--bin", "pstore-tool"], cwd=qemu.ROOT, check=True,
                           stdin=subprocess.DEVNULL, timeout=600)
            _tool_built = True
        return subprocess.run([str(TOOL), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise TestFailure(f"pstore-tool: {e}") from None


def records(disk: Path, blank_ok: bool = False) -> list[dict]:
    p = tool("--json", str(disk))
    if blank_ok and p.returncode == 1 and "has a pstore signature" in p.stderr:
        return []  # never formatted: killed before the first boot got that far
    if p.returncode != 0:
        raise TestFailure(f"pstore-tool failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)


def fresh_disk(name: str) -> Path:
    disk = LOGS / f"{name}.pstore.img"
    disk.unlink(missing_ok=True)
    return disk


def boot(machine: Machine, log: Path, timeout: float = 60, argv: list[str] | None = None) -> tuple[int, str]:
    """Boots (the machine, or `argv` as given) and returns QEMU's exit status and output."""
    r = qemu.run(argv or qemu.command(machine), timeout, log=log)
    if r.hung:
        raise TestFailure(f"hung: {log.name} did not exit within {timeout:.0f} s")
    return r.status, r.out


def guest(name: str, **kw) -> Guest:
    return Guest(kernel=IMAGES / f"{name}.bin", **kw)


@dataclass
class PstoreTest:
    name: str
    run: Callable[[str], list[str]]
    problems: list[str] = field(default_factory=list)


def expect(out: str, patterns: list[str]) -> list[str]:
    return [f"missing /{p}/" for p in patterns if not re.search(p, out)]


def guest_panic(name: str, modern: bool = False) -> list[str]:
    """A guest reports a panic through pvpanic: its record holds its last console lines. A
    second disk with another serial is left exactly as it was."""
    disk = fresh_disk(name)
    other = LOGS / f"{name}.other.img"
    other.write_bytes(bytes(range(256)) * 1024)
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    m = Machine([guest("panic", bootargs="lines=5")], pstore=disk, virtio_modern=modern,
                extra=["-drive", f"if=none,id=other,format=raw,file={other}", "-device", "virtio-blk-device,drive=other,serial=guest-disk"])
    code, out = boot(m, LOGS / f"{name}.log")
    problems = [] if code == 2 else [f"exit status {code}, expected 2"]
    problems += expect(out, [r"VM 0: stopping: crashed \(PanicReported\)", r"pstore: VM 0 crash recorded in dmesg-pstore_blk-0 \(Panic #1",
                             r"virtio-blk at 0x[0-9a-f]+ \(serial \"guest-disk\"\) is not the pstore disk or a VM's disk \(vmN-diskM\): left alone",
                             rf"pstore: disk \"hv-pstore\" at virtio-mmio 0x[0-9a-f]+ \(v{2 if modern else 1}\)"])
    if hashlib.sha256(other.read_bytes()).hexdigest() != before:
        problems.append("the disk that is not the pstore disk was written")
    recs = [r for r in records(disk) if r["kind"] == "dmesg"]
    if len(recs) != 1:
        return problems + [f"{len(recs)} dmesg records on the disk, expected 1"]
    r = recs[0]
    text = r["text"]
    if not (r["reason"] == "Panic" and r["counter"] == 1 and text.startswith("VM 0: guest crash: it reported a panic through pvpanic")
            and "panic guest console line 4\nguest panic: reporting it through pvpanic" in text and r["time"] > 1_600_000_000):
        problems.append(f"unexpected record: {r}")
    return problems


def hypervisor_panic_then_next_boot(name: str) -> list[str]:
    """A hypervisor panic leaves a Panic record (message, backtrace, console tail) in at
    most 3 requests; the next boot lists it and the console zone, and writes the next
    record into the next zone with the next counter."""
    disk = fresh_disk(name)
    crash = Machine([guest("crash", bootargs="fault=0")], hv_args="debug_faults=on", pstore=disk)
    code, out = boot(crash, LOGS / f"{name}-1.log")
    problems = [] if code == 3 else [f"first boot: exit status {code}, expected 3"]
    problems += expect(out, [r"pstore: panic recorded \([1-3] requests, \d+ bytes"])
    recs = [r for r in records(disk) if r["kind"] == "dmesg"]
    if not (len(recs) == 1 and recs[0]["text"].startswith("hypervisor panic on cpu0: debug fault requested by a guest")
            and re.search(r"backtrace: 0x[0-9a-f]+", recs[0]["text"]) and "debug fault Panic requested" in recs[0]["text"]):
        problems.append(f"hypervisor panic record: {recs}")
    code, out = boot(Machine([guest("panic", bootargs="lines=1")], pstore=disk), LOGS / f"{name}-2.log")
    problems += expect(out, [r"pstore: found dmesg-pstore_blk-0: Panic #1 at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: hypervisor panic on cpu0",
                             r"pstore: found console-pstore_blk-0: \d+ bytes, ending \"backtrace: 0x",
                             r"next record in zone 1", r"pstore: VM 0 crash recorded in dmesg-pstore_blk-1 \(Panic #2"])
    if len([r for r in records(disk) if r["kind"] == "dmesg"]) != 2:
        problems.append("the second record is not on the disk")
    code, out = boot(Machine([guest("hello")], hv_args="pstore_erase=on", pstore=disk), LOGS / f"{name}-3.log")
    problems += expect(out, [r"pstore: 2 record\(s\) erased"])
    if [r for r in records(disk) if r["kind"] == "dmesg"]:
        problems.append("records left after pstore_erase=on")
    return problems


def corrupted_disk(name: str) -> list[str]:
    """Zones with bad lengths, garbage and a wrong signature are reported and skipped;
    the good record is still listed and the hypervisor runs normally."""
    disk = fresh_disk(name)
    boot(Machine([guest("panic", bootargs="lines=1")], pstore=disk), LOGS / f"{name}-1.log")
    data = bytearray(disk.read_bytes())
    zone = 64 * 1024
    data[zone + 4:zone + 8] = (0xffff_fff0).to_bytes(4, "little")             # zone 1: datalen out of range
    data[2 * zone:2 * zone + 4096] = random.Random(7).randbytes(4096)          # zone 2: garbage
    data[3 * zone:3 * zone + 12] = bytes.fromhex("44424743") + (50).to_bytes(4, "little") + bytes(4)  # zone 3: no kmsg header
    data[14 * zone + 8:14 * zone + 12] = (0x7fff_ffff).to_bytes(4, "little")   # console: start out of range
    disk.write_bytes(bytes(data))
    code, out = boot(Machine([guest("hello")], pstore=disk), LOGS / f"{name}-2.log")
    problems = [] if code == 0 else [f"exit status {code}, expected 0"]
    problems += expect(out, [r"dmesg-pstore_blk-1 at offset 0x10000: skipped: lengths out of range",
                             r"dmesg-pstore_blk-2 at offset 0x20000: skipped: bad signature",
                             r"dmesg-pstore_blk-3 at offset 0x30000: skipped: bad kmsg header",
                             r"console-pstore_blk-0 at offset 0xe0000: skipped: lengths out of range",
                             r"pstore: found dmesg-pstore_blk-0: Panic #1", r"test verdict PASS"])
    if "HYPERVISOR PANIC" in out:
        problems.append("the hypervisor panicked on a corrupted disk")
    return problems


def killed_while_writing(name: str) -> list[str]:
    """QEMU killed at random moments (seeded, printed) while guests panic one after another
    on the same disk: every record complete before a kill is still there, unchanged."""
    disk = fresh_disk(name)
    seed = int(os.environ.get("PSTORE_KILL_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    kept: dict[int, dict] = {}
    problems: list[str] = []
    log = LOGS / f"{name}.log"
    lines = [f"seed {seed}"]
    argv = qemu.command(Machine([guest("panic", bootargs="lines=200")], pstore=disk))
    for i in range(10):
        delay = rng.uniform(0.1, 1.2)
        killed = qemu.run(argv, timeout=delay).hung
        found = {r["zone"]: r for r in records(disk, blank_ok=True) if r["kind"] == "dmesg"}
        for zone, r in kept.items():
            if found.get(zone) != r:
                problems.append(f"round {i}: record in zone {zone} lost or changed after a kill at {delay:.3f} s")
        kept = found
        lines.append(f"round {i}: {'killed' if killed else 'finished'} at {delay:.3f} s, {len(found)} record(s)")
    log.write_text("\n".join(lines) + "\n")
    if not 2 <= len(kept) <= 10:
        problems.append(f"{len(kept)} records after 10 rounds: the kills did not straddle the writes (seed {seed})")
    return [f"{p} (seed {seed})" for p in problems]


def linux_reads_hypervisor_records(name: str) -> list[str]:
    """Cross-check with Linux's own pstore/blk: Debian's kernel, booted directly by QEMU on
    the disk the hypervisor wrote (a hypervisor panic, then a guest crash), lists both
    records in /sys/fs/pstore with the reason and counter Linux derives from the header."""
    if why := qemu.fetch_linux():
        return [f"no Linux guest: {why}"]
    disk = fresh_disk(name)
    boot(Machine([guest("crash", bootargs="fault=0")], hv_args="debug_faults=on", pstore=disk), LOGS / f"{name}-1.log")
    boot(Machine([guest("panic", bootargs="lines=3")], pstore=disk), LOGS / f"{name}-2.log")
    g = Guest(kernel=qemu.LINUX_DIR / "Image", initrd=qemu.LINUX_DIR / "initramfs.cpio", mem=256 * qemu.MIB,
              bootargs="console=ttyAMA0 panic=-1 quiet hvtest.pstore")
    _, out = boot(Machine([]), LOGS / f"{name}-linux.log", timeout=120, argv=qemu.direct_command(g, 1) + qemu.pstore_args(disk))
    return expect(out, [r"PSTORE FILE dmesg-pstore_blk-0\s+Panic: Total 1 times\s+hypervisor panic on cpu0: debug fault requested",
                        r"PSTORE FILE dmesg-pstore_blk-1\s+Panic: Total 2 times\s+VM 0: guest crash: it reported a panic through pvpanic",
                        r"PSTORE DONE"])


def linux_pmsg_port(name: str) -> list[str]:
    """A Linux guest's persistent messages through the hypervisor's virtio-console port named
    "pmsg": run 1 writes three step markers to /dev/vportNp0 and QEMU is killed (SIGKILL) the
    moment the guest says the writes returned: they are in the VM's pmsg ring all the same
    (pstore-tool). Run 2 (legacy virtio-mmio) lists them at boot and finds the port again;
    run 3 with vm0.pmsg=off has no port."""
    if why := qemu.fetch_linux():
        return [f"no Linux guest: {why}"]
    disk = fresh_disk(name)
    problems: list[str] = []

    def linux(what: str, legacy: bool = False) -> Guest:
        return Guest(kernel=qemu.LINUX_DIR / "Image", initrd=qemu.LINUX_DIR / "initramfs.cpio", mem=256 * qemu.MIB,
                     bootargs=f"console=ttyAMA0 panic=-1 quiet hvtest.pmsg={what}", virtio_legacy=legacy)

    log = LOGS / f"{name}-1.log"
    r = qemu.run(qemu.command(Machine([linux("write")], pstore=disk)), 120, log=log, marker=r"PMSG WRITTEN 3 lines to /dev/vport\d+p0\r?\n", kill_at_marker=True)
    if r.marker_at is None:
        raise TestFailure(f"run 1: no 'PMSG WRITTEN' ({'hung' if r.hung else f'exit status {r.status}'}; {log.name})")
    problems += expect(r.out, [r"VM 0: pmsg port \(virtio-console, port \"pmsg\"\) in virtio-mmio slot 0 \(SPI 16\)",
                               r"PMSG WRITTEN 3 lines to /dev/vport\d+p0"])
    ring = [r["text"] for r in records(disk) if r.get("vm") == 0 and r["kind"] == "pmsg"]
    want = "test 17 step 1 start\ntest 17 step 2 start\ntest 17 step 3 start\n"
    if ring != [want]:
        problems.append(f"pmsg ring after the kill: {ring!r}")
    code, out = boot(Machine([linux("list", legacy=True)], pstore=disk), LOGS / f"{name}-2.log", timeout=120)
    problems += [f"run 2: {p}" for p in expect(out, [r"pstore: VM 0 pmsg: 63 bytes, ending \"test 17 step 3 start\"",
                                                    r"PMSG port /dev/vport\d+p0"])]
    code, out = boot(Machine([linux("list")], pstore=disk, hv_args="vm0.pmsg=off"), LOGS / f"{name}-3.log", timeout=120)
    problems += [f"run 3 (vm0.pmsg=off): {p}" for p in expect(out, [r"PMSG no port named pmsg"])]
    if "pmsg port (virtio-console" in out:
        problems.append("run 3 (vm0.pmsg=off): the hypervisor still gave the VM a pmsg port")
    return problems


def ramoops_across_power_off(name: str) -> list[str]:
    """A Linux guest's own pstore (ramoops in the region its device tree reserves) survives
    QEMU being stopped and started again: run 1 crashes (the hypervisor saves the region's
    written pages to the pstore disk when the VM stops); run 2, a new QEMU on the same disk,
    finds the oops in /sys/fs/pstore (the region restored before boot) and deletes it; run
    3 finds nothing (the erase reached the disk). The host tool lists the saved record.
    Runs 4 and 5 divide the region otherwise (ramoops=R,C,F,P)."""
    if why := qemu.fetch_linux():
        return [f"no Linux guest: {why}"]
    disk = fresh_disk(name)
    problems: list[str] = []

    def run(i: int, what: str, status: int, patterns: list[str], hv_args: str = "") -> str:
        g = Guest(kernel=qemu.LINUX_DIR / "Image", initrd=qemu.LINUX_DIR / "initramfs.cpio", mem=256 * qemu.MIB,
                  bootargs=f"console=ttyAMA0 panic=0 quiet hvtest.keep_ramoops={what}")
        code, out = boot(Machine([g], pstore=disk, hv_args=hv_args), LOGS / f"{name}-{i}.log", timeout=120)
        if code != status:
            problems.append(f"run {i} ({what}): exit status {code}, expected {status}")
        problems.extend(f"run {i} ({what}): {p}" for p in expect(out, patterns))
        return out

    saved = r"VM 0: ramoops region saved to the pstore disk: \d+ page\(s\) \(\d+ KiB\) written, generation (\d+)"
    # An idle CPU may save the region while the VM runs too: generations are counted, not
    # fixed; each run restores the last one saved before it.
    out = run(1, "crash", 2, [r"pstore: the VMs' ramoops regions \(1024 KiB each\) are kept at", r"KEEP records: none",
                              r"VM 0: stopped \(Crashed", saved])
    last = (re.findall(saved, out) or ["?"])[-1]
    recs = [r for r in records(disk) if r.get("vm") == 0 and r["kind"] == "dmesg"]
    if not recs or "Kernel panic - not syncing: sysrq triggered crash" not in recs[0]["text"]:
        problems.append(f"pstore-tool after the crash: {[(r.get('name'), r['text'][:80]) for r in recs]}")
    out = run(2, "erase", 0, [rf"VM 0: ramoops region restored from the pstore disk \(saved .* UTC, generation {last}\)",
                              r"KEEP records: dmesg-ramoops-0", r"KEEP panic message: sysrq triggered crash", r"KEEP erased: 0 left",
                              saved])
    last = (re.findall(saved, out) or ["?"])[-1]
    out = run(3, "list", 0, [rf"generation {last}\)", r"KEEP records: none"])
    # Dirty logging: the slot being replaced holds the generation before the newest, which
    # differs from it only where its save wrote; run 3 writes those pages and its own, not
    # the whole region.
    pages = re.findall(r"saved to the pstore disk: (\d+) page", out)
    if not pages or int(pages[-1]) >= 256:
        problems.append(f"run 3 wrote {pages} pages: the whole region, not the changed pages")
    # The region divided otherwise (ramoops=R,C,F,P): the copy saved with the old division
    # is not put back (Linux would not find its records); a crash is saved with the new one
    # (7 records of 141,604 bytes: the host tool reads it by the header's division) and
    # found by the next boot with the same division.
    odd = "ramoops=128,32,16,8"
    run(4, "crash", 2, [r"saved ramoops region is divided as ramoops=64,64,0,64 \(KiB\), not as its device tree says now: not restored",
                        r"KEEP records: none", saved], odd)
    recs = [r for r in records(disk) if r.get("vm") == 0 and r["kind"] == "dmesg"]
    if not recs or "Kernel panic - not syncing: sysrq triggered crash" not in recs[0]["text"]:
        problems.append(f"pstore-tool after the crash with {odd}: {[(r.get('name'), r['text'][:80]) for r in recs]}")
    run(5, "list", 0, [r"VM 0: ramoops region restored from the pstore disk", r"KEEP records: dmesg-ramoops-0",
                       r"KEEP panic message: sysrq triggered crash"], odd)
    return problems


def ramoops_dump_after_pvpanic(name: str) -> list[str]:
    """Linux reports a panic through pvpanic before it dumps its log into ramoops: a guest
    whose ramoops region is in use (its persistent_ram signature) is not stopped at the
    report but when it halts (or resets, or after 2 s), so its dump, written after the
    report, is saved with the region; the VM still counts as crashed."""
    disk = fresh_disk(name)
    code, out = boot(Machine([guest("panic", bootargs="lines=1 ramoops=1")], pstore=disk), LOGS / f"{name}.log")
    problems = [] if code == 2 else [f"exit status {code}, expected 2"]
    problems += expect(out, [r"VM 0: pvpanic: its kernel panicked; it runs on until it has dumped its log into ramoops",
                             r"guest panic: dump written into the ramoops region", r"VM 0: stopped \(Crashed\(PanicReported\)\)",
                             r"VM 0: ramoops region saved to the pstore disk"])
    recs = [r for r in records(disk) if r.get("vm") == 0]
    if not any("guest dump after pvpanic" in r["text"] for r in recs):
        problems.append(f"the dump is not in the saved region: {recs}")
    return problems


def ramoops_damaged(name: str) -> list[str]:
    """A saved region whose bytes no longer match its checksum is not put back: run 1 saves
    a guest's dump; a byte of it is changed on the disk; run 2 reports the copy damaged and
    the guest finds its region empty."""
    disk = fresh_disk(name)
    boot(Machine([guest("panic", bootargs="lines=1 ramoops=1")], pstore=disk), LOGS / f"{name}-1.log")
    data = bytearray(disk.read_bytes())
    # In the VM's area (after the zones: 1 MiB on this disk), not in a console record.
    at = data.find(b"guest dump after pvpanic", 1 << 20)
    if at < 0:
        return ["run 1 left no dump on the disk"]
    data[at] ^= 0x20
    disk.write_bytes(bytes(data))
    r = qemu.run(qemu.command(Machine([guest("ramoopscount")], pstore=disk)), 4, log=LOGS / f"{name}-2.log")
    return expect(r.out, [r"pstore: VM 0's saved ramoops region in slot \d is damaged: not used", r"(?m)^restored count 0"])


def ramoops_at_hypervisor_panic(name: str) -> list[str]:
    """The hypervisor's panic path saves the guests' ramoops regions too (from their frames,
    allocating nothing), after its own record: the guest's record written before the
    panic is on the disk (host tool) and back in its region on the next run."""
    disk = fresh_disk(name)
    crash = Machine([guest("crash", bootargs="fault=0 ramoops=1")], hv_args="debug_faults=on", pstore=disk)
    code, out = boot(crash, LOGS / f"{name}.log")
    problems = [] if code == 3 else [f"exit status {code}, expected 3"]
    problems += expect(out, [r"pstore: panic recorded", r"pstore: VM 0's ramoops region saved \(256 pages, generation 1\)"])
    recs = [r for r in records(disk) if r.get("vm") == 0 and r["kind"] == "dmesg"]
    if not any("guest record before the hypervisor panicked" in r["text"] for r in recs):
        problems.append(f"the guest's record is not on the disk: {recs}")
    return problems


def ramoops_saved_while_running(name: str) -> list[str]:
    """An idle CPU saves a running VM's written ramoops pages (every 2 s at most): QEMU
    killed while the guest spins still leaves its record on the disk."""
    disk = fresh_disk(name)
    m = Machine([guest("crash", bootargs="ramoops=1 hang=1")], cpus=2, hv_args="log=debug", pstore=disk)
    r = qemu.run(qemu.command(m), 8, log=LOGS / f"{name}.log")
    problems = [] if r.hung else ["the spinning guest stopped"]
    problems += expect(r.out, [r"record written; spinning", r"VM 0: ramoops region saved to the pstore disk: .* \(while it runs\)"])
    recs = [x for x in records(disk) if x.get("vm") == 0 and x["kind"] == "dmesg"]
    if not any("guest record before the hypervisor panicked" in x["text"] for x in recs):
        problems.append(f"the guest's record is not on the disk after the kill: {recs}")
    return problems


def ramoops_killed_while_saving(name: str) -> list[str]:
    """QEMU killed at random moments (seeded, printed) while a guest keeps rewriting its
    ramoops record and idle CPUs save the region: each run restores the copy the disk holds
    (the host tool's), whole, and the count never goes back; saves write only the page the
    guest changes once both slots hold the region."""
    disk = fresh_disk(name)
    seed = int(os.environ.get("PSTORE_KILL_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    problems: list[str] = []
    last = 0
    one_page_saves = 0
    for i in range(6):
        r = qemu.run(qemu.command(Machine([guest("ramoopscount")], cpus=2, hv_args="log=debug", pstore=disk)), rng.uniform(3, 7),
                     log=LOGS / f"{name}-{i}.log")
        one_page_saves += len(re.findall(r"ramoops region saved to the pstore disk: 1 page\(s\) \(4 KiB\) written", r.out))
        # The guest's own line (the boot log may quote the previous run's in the console zone).
        said = re.findall(r"^restored count (\d+)", r.out, re.M)
        if not said or int(said[-1]) != last:
            problems.append(f"run {i}: restored {said[-1] if said else None}, the disk held {last}")
        recs = [x["text"] for x in records(disk, blank_ok=True) if x.get("vm") == 0 and x["kind"] == "dmesg"]
        counts = [int(x.group(1)) for x in (re.search(r"count (\d+)", t) for t in recs) if x]
        now = counts[0] if counts else 0
        if now < last:
            problems.append(f"run {i}: the disk's count went back from {last} to {now}")
        last = now
    if last == 0:
        problems.append("no save happened in 6 runs")
    # Dirty logging: the guest rewrites one page; once both slots hold the region, a save
    # writes that page alone.
    if one_page_saves == 0:
        problems.append("no save wrote just the one page the guest changed")
    return [f"{p} (seed {seed})" for p in problems]


def pmsg_ring(name: str) -> list[str]:
    """A VM's persistent messages (HV_PMSG_WRITE) in its pmsg zone on the pstore disk: 3000
    lines wrap the 64 KiB ring, the host tool prints it oldest first (consecutive lines
    ending with the last); the next run lists it at boot and appends after it."""
    disk = fresh_disk(name)
    code, out = boot(Machine([guest("pmsg")], pstore=disk), LOGS / f"{name}-1.log")
    problems = [] if code == 0 else [f"run 1: exit status {code}"]
    problems += expect(out, [r"pmsg: 3000 messages written", r"pmsg: bad buffers refused", r"VM 0: test verdict PASS"])
    ring = [r["text"] for r in records(disk) if r.get("vm") == 0 and r["kind"] == "pmsg"]
    lines = ring[0].split("\n")[1:-1] if ring else []
    numbers = [int(m.group(1)) for m in (re.fullmatch(r"pmsg message (\d+) of 3000", x) for x in lines) if m]
    if not ring or len(ring[0]) != 64 * 1024 - 12 or numbers != list(range(numbers[0] if numbers else 0, 3001)) or len(numbers) < 2000:
        problems.append(f"pmsg ring after run 1: {len(ring[0]) if ring else None} bytes, lines {numbers[:2]}..{numbers[-2:]}")
    code, out = boot(Machine([guest("pmsg", bootargs="count=5")], pstore=disk), LOGS / f"{name}-2.log")
    problems += expect(out, [r"pstore: VM 0 pmsg: 65524 bytes, ending \"pmsg message 3000 of 3000\"", r"pmsg: 5 messages written"])
    ring = [r["text"] for r in records(disk) if r.get("vm") == 0 and r["kind"] == "pmsg"]
    if not ring or not ring[0].endswith("pmsg message 3000 of 3000\npmsg message 1 of 5\npmsg message 2 of 5\npmsg message 3 of 5\n"
                                        "pmsg message 4 of 5\npmsg message 5 of 5\n"):
        problems.append(f"pmsg ring after run 2 ends {ring[0][-120:] if ring else None!r}")
    return problems


def failing_disk(name: str) -> list[str]:
    """Fault injection (QEMU's blkdebug): the disk fails the write of the next record's
    header sector with EIO. The failure is logged, nothing hangs, the VM is stopped as
    usual, the earlier record is intact and the half-written zone is not taken for a record;
    a hypervisor panic on that disk still ends the machine with status 3."""
    disk = fresh_disk(name)
    boot(Machine([guest("panic", bootargs="lines=1")], pstore=disk), LOGS / f"{name}-1.log")
    conf = LOGS / f"{name}.blkdebug.conf"
    # Zone 1 starts at sector 128: its header sector is written last.
    conf.write_text('[inject-error]\nevent = "pwritev"\nerrno = "5"\nsector = "128"\n')
    drive = ["-drive", f"if=none,id=pstore,format=raw,file=blkdebug:{conf}:{disk}", "-device", "virtio-blk-device,drive=pstore,serial=hv-pstore"]
    code, out = boot(Machine([guest("panic", bootargs="lines=1")], extra=drive), LOGS / f"{name}-2.log")
    problems = [] if code == 2 else [f"exit status {code}, expected 2"]
    problems += expect(out, [r"next record in zone 1", r"pstore: VM 0 crash not recorded: Status\(1\)", r"VM 0: stopped \(Crashed"])
    recs = {r["zone"]: r["text"] for r in records(disk) if r["kind"] == "dmesg"}
    if list(recs) != [0] or "panic guest console line 0" not in recs[0]:
        problems.append(f"records after the failed write: {recs}")
    code, out = boot(Machine([guest("crash", bootargs="fault=0")], hv_args="debug_faults=on", extra=drive), LOGS / f"{name}-3.log")
    if code != 3:
        problems.append(f"hypervisor panic on a failing disk: exit status {code}, expected 3")
    problems += expect(out, [r"pstore: panic not recorded"])
    return problems


def small_disk(name: str) -> list[str]:
    """A pstore disk too small for the zones (64 KiB for one kmsg zone plus two rings):
    refused with a message, and the machine runs normally."""
    disk = LOGS / f"{name}.pstore.img"
    disk.write_bytes(bytes(64 * 1024))
    drive = ["-drive", f"if=none,id=pstore,format=raw,file={disk}", "-device", "virtio-blk-device,drive=pstore,serial=hv-pstore"]
    code, out = boot(Machine([guest("hello")], extra=drive), LOGS / f"{name}.log")
    return ([] if code == 0 else [f"exit status {code}"]) + expect(
        out, [r"pstore: disk \"hv-pstore\" \(64 KiB\) cannot hold the zones: the disk is too small", r"test verdict PASS"])


def no_disk(name: str) -> list[str]:
    code, out = boot(Machine([guest("hello")]), LOGS / f"{name}.log")
    return ([] if code == 0 else [f"exit status {code}"]) + expect(
        out, [r"pstore: no virtio-blk disk with serial \"hv-pstore\": panics are not recorded on disk", r"test verdict PASS"])


def pstore_tests() -> list[PstoreTest]:
    return [
        PstoreTest("pstore-guest-panic", lambda n: guest_panic(n)),
        PstoreTest("pstore-guest-panic-virtio-v2", lambda n: guest_panic(n, modern=True)),
        PstoreTest("pstore-hypervisor-panic-next-boot", hypervisor_panic_then_next_boot),
        PstoreTest("pstore-corrupted-disk", corrupted_disk),
        PstoreTest("pstore-killed-while-writing", killed_while_writing),
        PstoreTest("pstore-no-disk", no_disk),
        PstoreTest("pstore-disk-failing-writes", failing_disk),
        PstoreTest("pstore-disk-too-small", small_disk),
        PstoreTest("pstore-linux-reads-hypervisor-records", linux_reads_hypervisor_records),
        PstoreTest("pstore-guest-ramoops-across-power-off", ramoops_across_power_off),
        PstoreTest("pstore-guest-ramoops-dump-after-pvpanic", ramoops_dump_after_pvpanic),
        PstoreTest("pstore-guest-pmsg", pmsg_ring),
        PstoreTest("pstore-linux-pmsg-port", linux_pmsg_port),
        PstoreTest("pstore-guest-ramoops-damaged", ramoops_damaged),
        PstoreTest("pstore-guest-ramoops-at-hypervisor-panic", ramoops_at_hypervisor_panic),
        PstoreTest("pstore-guest-ramoops-saved-while-running", ramoops_saved_while_running),
        PstoreTest("pstore-guest-ramoops-killed-while-saving", ramoops_killed_while_saving),
    ]
