#!/usr/bin/env python3
"""The one place that builds QEMU command lines (run, debug, boot tests, benchmarks), and
the checks that stop bad input before QEMU starts.

    scripts/qemu.py run   [options]     boot the hypervisor with guests, console on the terminal
    scripts/qemu.py debug [options]     the same, halted, with QEMU's gdb stub on :1234
    scripts/qemu.py print [options]     print the command line only

Options (all optional; `make run KERNEL=... APPEND=...` hands them over in the environment,
as HVRUN_KERNEL, HVRUN_APPEND, ..., read with --from-env: no shell sees them):
    --kernel F      guest arm64 Image (default: Debian's arm64 Linux with a busybox initramfs,
                    fetched by scripts/fetch-linux.sh; the demo guest is target/images/hello.bin)
    --initrd F      guest initrd (default with the default kernel: its busybox initramfs)
    --append S      guest kernel command line (default with the default kernel: console=ttyAMA0 panic=-1)
    --smp N         guest vCPUs, 1 to 64 (default 2 for the default kernel, else 1)
    --mem SIZE      guest RAM, e.g. 256M or 1G; a plain number is MiB, as for QEMU's -m
                    (default 256M for the default kernel, else 128M)
    --cpus N        physical CPUs of the machine, 1 to 8 (default: max(2, SMP), at most 8)
    --vms N         how many VMs boot that guest at once (default 1)
    --hv-args S     extra hypervisor command line (e.g. log=debug)
    --pauth impdef|qarma5   PAC algorithm of -cpu max (default impdef: 3.5x cheaper to emulate)
    --pstore F      the pstore disk image (created, 18.5 MiB sparse, if missing; default target/pstore.img;
                    "none" for no disk). Read it with: cargo run -p hv-core --bin pstore-tool -- F
    --net user      every VM gets a network card on the hypervisor's switch, and QEMU gives the
                    hypervisor a card with user networking (10.0.2.0/24, DHCP, the host as 10.0.2.2)
                    as the switch's uplink; the default initramfs configures eth0 with DHCP
    --hostfwd R     with --net user: QEMU forwards host connections into the guests, R as QEMU's
                    hostfwd (e.g. tcp:127.0.0.1:2222-:22; several separated by spaces)
    --qemu-extra S  more QEMU arguments, split as a shell would split them (nothing is run)

run and debug return QEMU's exit status (README, Exit status); bad input is one line and
status 2 before QEMU starts.
"""
from __future__ import annotations

import argparse
import codecs
import dataclasses
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "target" / "images"
HYPERVISOR = IMAGES / "hypervisor.bin"
# The target triple is named once, in .cargo/config.toml's `aarch64` alias.
TARGET = re.search(r'"--target", "([^"]+)"', (ROOT / ".cargo" / "config.toml").read_text())[1]
HYPERVISOR_ELF = ROOT / "target" / "cross" / TARGET / "release" / "hypervisor"
# Debian's kernel and the busybox initramfs (scripts/fetch-linux.sh), and the test logs.
LINUX_DIR = ROOT / "target" / "linux"
LOGS = ROOT / "target" / "test-logs"
DEMO_GUEST = IMAGES / "hello.bin"
DEFAULT_LINUX_ARGS = "console=ttyAMA0 panic=-1"
QEMU = "qemu-system-aarch64"
RAM_BASE = 0x4000_0000
# Guest modules go above where QEMU puts its device tree (RAM base + 128 MiB), each 4 KiB past
# a 2 MiB boundary: the hypervisor copies them into 2 MiB blocks of guest RAM, and a page and
# its copy at the same offset from a 2 MiB boundary would share a slot of QEMU's TLB.
MODULE_BASE = RAM_BASE + (256 << 20)
MODULE_SKEW = 4 << 10
DTB_SLOT = 2 << 20  # the hypervisor puts each guest's device tree in its last 2 MiB
RAMOOPS = 1 << 20  # and the ramoops region below it (ramoops=on, the default)
MIB = 1 << 20
GDB_PORT = 1234
DEFAULT_PSTORE = ROOT / "target" / "pstore.img"
# Room for the pstore zones (1 MiB) and every VM's ramoops area (hv_core::ramoops_store:
# 8 VMs, two copies of a 1 MiB region and a 64 KiB pmsg ring each, 64 KiB aligned): sparse.
PSTORE_SIZE = 18 * MIB + 512 * 1024  # hv_core::ramoops_store::min_disk(): the zones get 1 MiB
PSTORE_SERIAL = "hv-pstore"


class UserError(Exception):
    """Bad input: reported as one clear line, exit status 2."""


def parse_size(text: str, name: str = "MEM") -> int:
    """A size as QEMU's -m takes it: a number of MiB, or with a K, M or G suffix."""
    units = {"K": 10, "M": 20, "G": 30}
    t = text.strip().upper().removesuffix("B")
    shift = units.get(t[-1:], 20) if t else 0
    digits = t[:-1] if t[-1:] in units else t
    if not digits.isdigit():
        raise UserError(f"{name}={text} is not a size (use e.g. 128M or 1G; a plain number is MiB)")
    return int(digits) << shift


def image_footprint(path: Path) -> int:
    """Checks that `path` is a readable little-endian arm64 Image; returns the bytes it
    occupies in guest RAM (text_offset + image_size)."""
    if not path.exists():
        raise UserError(f"kernel '{path}' does not exist")
    try:
        with path.open("rb") as f:
            header = f.read(64)
        size = path.stat().st_size
    except OSError as e:
        raise UserError(f"kernel '{path}' cannot be read: {e.strerror}") from None
    if header[:4] == b"\x7fELF":
        raise UserError(f"kernel '{path}' is an ELF file (vmlinux?): pass the Image (arch/arm64/boot/Image), not vmlinux")
    if len(header) < 64 or header[56:60] != b"ARM\x64":
        hint = " (a gzip-compressed vmlinuz? unpack it first)" if header[:2] == b"\x1f\x8b" else ""
        raise UserError(f"kernel '{path}' is not an arm64 Image: no 'ARM\\x64' magic at byte 56{hint}")
    text_offset, image_size, flags = struct.unpack_from("<QQQ", header, 8)
    if flags & 1:
        raise UserError(f"kernel '{path}' is a big-endian Image; only little-endian guests run")
    if image_size == 0:
        text_offset, image_size = 0x80000, size
    return text_offset + max(image_size, size)


def readable(path: Path, what: str) -> int:
    try:
        with path.open("rb"):
            pass
        return path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{what} '{path}' does not exist") from None
    except OSError as e:
        raise UserError(f"{what} '{path}' cannot be read: {e.strerror}") from None


@dataclass
class Disk:
    path: Path
    read_only: bool = False


@dataclass
class Guest:
    kernel: Path
    initrd: Path | None = None
    bootargs: str = ""
    mem: int = 128 * MIB
    smp: int = 1
    # Disk images the VM's guest sees as virtio-blk disks (serial vm<N>-disk<M>).
    disks: list[Disk] = field(default_factory=list)
    # Its virtio devices with the legacy virtio-mmio interface (version 1, QEMU's default).
    virtio_legacy: bool = False


@dataclass
class Machine:
    guests: list[Guest]
    cpus: int | None = None
    hv_args: str = ""
    pauth: str = "impdef"
    icount: bool = False
    gdb: bool = False
    host_mem: int | None = None
    # The pstore disk (a virtio-blk drive with serial hv-pstore), created if missing.
    pstore: Path | None = None
    # The pstore disk's transport: legacy virtio-mmio (QEMU's default) or version 2.
    virtio_modern: bool = False
    # Every VM's console output as `vmN| ` lines (console_prefix=on), the focused VM's too:
    # what tests and benchmarks read. Off, the focused VM's output passes raw (make run).
    console_prefix: bool = False
    # Network cards for the VMs (net=on) and QEMU user networking as the switch's uplink,
    # with these hostfwd rules.
    net: bool = False
    hostfwd: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def opt(value: object) -> str:
    """A value inside a QEMU -device option list, where a comma must be doubled."""
    return str(value).replace(",", ",,")


def align_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def command(m: Machine, validate: bool = True) -> list[str]:
    """Validates the machine and returns QEMU's argv. Tests of the hypervisor's own checks
    pass validate=False to get bad guests (or none) through."""
    if not m.guests and validate:
        raise UserError("no guest given")
    if not HYPERVISOR.exists():
        raise UserError(f"{HYPERVISOR} is missing: run 'make' first")
    cpus = m.cpus if m.cpus is not None else min(8, max([2] + [g.smp for g in m.guests]))
    if not 1 <= cpus <= 8:
        raise UserError(f"CPUS={cpus}: the hypervisor uses 1 to 8 physical CPUs")
    if m.pauth not in ("impdef", "qarma5"):
        raise UserError(f"PAUTH={m.pauth}: use impdef or qarma5")
    devices: list[str] = []
    hv_args = []
    addr = MODULE_BASE
    guest_total = 0
    for i, g in enumerate(m.guests):
        footprint = image_footprint(g.kernel) if validate else 0
        if g.smp < 1:
            raise UserError(f"SMP={g.smp}: a guest needs at least one vCPU")
        overcommit = re.search(rf"(^|\s)(vm{i}\.)?overcommit=on(\s|$)", m.hv_args)
        if g.smp > cpus and not overcommit:
            given = f"CPUS={cpus}" if m.cpus is not None else f"{cpus}, the most the machine has"
            raise UserError(f"SMP={g.smp} is larger than the CPUs ({given}); "
                            f"HVARGS=overcommit=on lets vCPUs share CPUs by time slices")
        if g.mem % (2 * MIB) or g.mem < 4 * MIB:
            size = f"{g.mem // MIB} MiB" if g.mem % MIB == 0 else f"{g.mem} bytes"
            raise UserError(f"MEM={size}: guest memory must be a multiple of 2M and at least 4M")
        need = footprint + DTB_SLOT + RAMOOPS
        initrd_size = readable(g.initrd, "initrd") if g.initrd else 0
        if need + initrd_size > g.mem:
            what = "kernel and initrd" if g.initrd else "kernel"
            raise UserError(f"{what} need {(need + initrd_size + MIB - 1) // MIB} MiB but the guest has MEM={g.mem // MIB}M")
        kernel_size = g.kernel.stat().st_size
        devices += ["-device", f"guest-loader,addr={addr + MODULE_SKEW:#x},kernel={opt(g.kernel)},bootargs={opt(g.bootargs)}"]
        addr = align_up(addr + MODULE_SKEW + kernel_size, 2 * MIB)
        if g.initrd:
            devices += ["-device", f"guest-loader,addr={addr + MODULE_SKEW:#x},initrd={opt(g.initrd)}"]
            addr = align_up(addr + MODULE_SKEW + initrd_size, 2 * MIB)
        hv_args += [f"vm{i}.mem={g.mem // MIB}M", f"vm{i}.smp={g.smp}"] + ([f"vm{i}.virtio=legacy"] if g.virtio_legacy else [])
        guest_total += g.mem
        for n, d in enumerate(g.disks):
            if not d.path.is_file():
                raise UserError(f"disk '{d.path}' {'is a directory' if d.path.is_dir() else 'does not exist'}")
            if readable(d.path, "disk") < 512:
                raise UserError(f"disk '{d.path}' is smaller than a sector (512 bytes)")
            devices += ["-drive", f"if=none,id=vm{i}d{n},format=raw,file={opt(d.path)}{',readonly=on' if d.read_only else ''}",
                        "-device", f"virtio-blk-device,drive=vm{i}d{n},serial=vm{i}-disk{n}"]
    # Host RAM: the modules, every guest's RAM, and room for the hypervisor.
    host_mem = m.host_mem or align_up(addr - RAM_BASE + guest_total + 256 * MIB, 256 * MIB)
    if m.console_prefix:
        hv_args.append("console_prefix=on")
    if m.net:
        hv_args.append("net=on")
    # QEMU gives the machine fresh, zeroed RAM (unless a memory backend of the user's says
    # otherwise): the hypervisor need not zero frames it never used.
    if not any("memory-backend" in a for a in m.extra):
        hv_args.append("ram_zeroed=on")
    if m.hv_args:
        hv_args.append(m.hv_args)
    cpu = "max,pauth-impdef=on" if m.pauth == "impdef" else "max"
    argv = [
        QEMU,
        "-machine", "virt,virtualization=on,gic-version=3",
        "-cpu", cpu,
        "-smp", str(cpus),
        "-m", f"{host_mem // MIB}M",
        "-nographic",
        # No default network card (its option ROM is a package, ipxe-qemu, that a minimal
        # QEMU install lacks); with `net`, a virtio-mmio one, which needs none.
        *(uplink_args(m.hostfwd) if m.net else ["-nic", "none"]),
        "-semihosting-config", "enable=on,target=native",
        "-kernel", str(HYPERVISOR),
        "-append", " ".join(hv_args),
        *devices,
    ]
    if m.pstore:
        argv += pstore_args(m.pstore, m.virtio_modern)
    if m.icount:
        argv += ["-icount", "shift=0,sleep=off"]
    if m.gdb:
        argv += ["-gdb", f"tcp::{GDB_PORT}", "-S"]
    return argv + m.extra


HOSTFWD = re.compile(r"(tcp|udp):([\d.]*):(\d+)-([\d.]*):(\d+)")


def uplink_args(hostfwd: list[str]) -> list[str]:
    """QEMU options giving the hypervisor a virtio-net card with user networking."""
    for rule in hostfwd:
        if not HOSTFWD.fullmatch(rule):
            raise UserError(f"HOSTFWD={rule}: use PROTO:HOSTADDR:PORT-GUESTADDR:PORT, e.g. tcp:127.0.0.1:2222-:22")
    netdev = "user,id=uplink" + "".join(f",hostfwd={r}" for r in hostfwd)
    return ["-netdev", netdev, "-device", "virtio-net-device,netdev=uplink"]


def pstore_args(path: Path, modern: bool = False) -> list[str]:
    """QEMU options attaching `path` (created empty if missing) as the pstore disk."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(PSTORE_SIZE)
    if path.stat().st_size < 128 * 1024:
        raise UserError(f"{path}: a pstore disk needs at least 128 KiB")
    args = ["-drive", f"if=none,id=pstore,format=raw,file={opt(path)}",
            "-device", f"virtio-blk-device,drive=pstore,serial={PSTORE_SERIAL}"]
    if modern:
        args += ["-global", "virtio-mmio.force-legacy=false"]
    return args


def direct_command(g: Guest, cpus: int, pauth: str = "impdef") -> list[str]:
    """QEMU booting guest `g` itself, without the hypervisor (at EL1, with the same CPU,
    memory and devices): the baseline for benchmarks."""
    image_footprint(g.kernel)
    cpu = "max,pauth-impdef=on" if pauth == "impdef" else "max"
    argv = [QEMU, "-machine", "virt,gic-version=3", "-cpu", cpu, "-smp", str(cpus), "-m", f"{g.mem // MIB}M",
            "-nographic", "-nic", "none", "-kernel", str(g.kernel), "-append", g.bootargs]
    if g.initrd:
        argv += ["-initrd", str(g.initrd)]
    # The same disks with the same serials, on QEMU's own virtio-blk, with the interface
    # the hypervisor's guest gets.
    for n, d in enumerate(g.disks):
        argv += ["-drive", f"if=none,id=d{n},format=raw,file={opt(d.path)}{',readonly=on' if d.read_only else ''}",
                 "-device", f"virtio-blk-device,drive=d{n},serial=vm0-disk{n}"]
    if g.disks and not g.virtio_legacy:
        argv += ["-global", "virtio-mmio.force-legacy=false"]
    return argv


_linux_problem: str | None = None


def fetch_linux(quiet: bool = True) -> str:
    """Makes sure the default Linux guest is in LINUX_DIR (scripts/fetch-linux.sh, the only
    caller, once per process; it caches across runs). Returns '' or why it is not there.
    `quiet`: its output is kept back (tests, benchmarks); else it shows (make run)."""
    global _linux_problem
    if _linux_problem is None:
        p = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-linux.sh")], stdin=subprocess.DEVNULL,
                           capture_output=quiet, text=True, timeout=1800)
        last = (p.stderr or "").strip().splitlines()[-1:] or ["fetch-linux.sh failed"]
        _linux_problem = "" if p.returncode == 0 else last[0]
    return _linux_problem


@dataclass
class Run:
    """What became of one QEMU run."""
    argv: list[str]
    # QEMU's exit status; None when it was killed at the deadline.
    status: int | None
    out: str
    seconds: float
    # Seconds from the start to the first output line matching `marker`, if asked and seen.
    marker_at: float | None = None
    # The dialog's prompt that never came (nothing was typed after it).
    unanswered: str | None = None
    # When output arrived: (seconds from the start, length of `out` so far) per chunk read.
    arrivals: list[tuple[float, int]] = field(default_factory=list)

    @property
    def hung(self) -> bool:
        return self.status is None

    def arrived(self, offset: int) -> float:
        """Seconds from the start until output up to `offset` had arrived."""
        return next((t for t, end in self.arrivals if end >= offset), self.seconds)

    def matches(self, pattern: str) -> list[tuple[float, re.Match]]:
        """Every match of `pattern` in the output, with when its last byte arrived."""
        return [(self.arrived(m.end()), m) for m in re.finditer(pattern, self.out)]

    def at(self, pattern: str) -> float | None:
        """When the first match of `pattern` had arrived, if any."""
        found = self.matches(pattern)
        return found[0][0] if found else None


def run(argv: list[str], timeout: float, log: Path | None = None, dialog: list[tuple] = (),
        marker: str | None = None, kill_at_marker: bool = False) -> Run:
    """Runs QEMU and always ends: at `timeout` seconds it is killed (with anything it
    started), whatever it printed or did not. Output is read as it comes, so `marker` can be
    timed (or, `kill_at_marker`, QEMU killed the moment it appears, as a power cut would) and
    `dialog` answered: each (regex, text[, seconds]) types text once the output matches regex
    (and, if given, that many seconds later: a shell's prompt comes before it reads, a
    command's echo before it runs); text may be a function, called then (what it returns is
    typed). The command line and output go to `log`."""
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if dialog else subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    marker_at: list[float] = []
    arrivals: list[tuple[float, int]] = []

    def read() -> None:
        # Whatever comes, as it comes: a prompt has no newline to wait for.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        recent = ""
        while chunk := os.read(p.stdout.fileno(), 4096):
            text = decoder.decode(chunk)
            if marker and not marker_at:
                recent = (recent + text)[-4096:]
                if re.search(marker, recent):
                    marker_at.append(time.monotonic() - start)
                    if kill_at_marker:
                        os.killpg(p.pid, signal.SIGKILL)
            lines.append(text)
            arrivals.append((time.monotonic() - start, (arrivals[-1][1] if arrivals else 0) + len(text)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = start + timeout
    unanswered = None
    for pattern, text, *later in dialog:
        while not re.search(pattern, "".join(lines)) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not re.search(pattern, "".join(lines)):
            unanswered = pattern
            break
        time.sleep(later[0] if later else 0)
        if callable(text):
            # An action outside the guest (a connection from the host, say), then what it
            # returns is typed.
            text = text() or ""
        try:
            p.stdin.write(text.encode())
            p.stdin.flush()
        except BrokenPipeError:
            break
    try:
        status: int | None = p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        status = None
    reader.join(timeout=5)
    out = "".join(lines)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(shlex.join(argv) + "\n\n" + out)
    return Run(argv, status, out, time.monotonic() - start, marker_at[0] if marker_at else None, unanswered, arrivals)


# The options `make run` and `make debug` take (KERNEL=, APPEND=, ...): the Makefile hands
# them over in the environment as HVRUN_<NAME>, exactly as given, so that no shell ever
# reads them (quotes, spaces, $ and backticks in APPEND reach the guest as written).
OPTIONS = ["kernel", "initrd", "append", "smp", "mem", "cpus", "vms", "hv-args", "pauth", "pstore", "disk", "root", "net", "hostfwd", "qemu-extra"]
MAKE_NAMES = {"hv-args": "HVARGS", "qemu-extra": "QEMU_EXTRA"}


def make_name(option: str) -> str:
    return MAKE_NAMES.get(option, option.upper())


def host_memory() -> int | None:
    """The host's RAM in bytes (None if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_from_args(argv: list[str]) -> Machine:
    p = argparse.ArgumentParser(prog="qemu.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["run", "debug", "print"])
    p.add_argument("--from-env", action="store_true", help="take the options from HVRUN_<NAME> (what make passes)")
    for o in OPTIONS:
        p.add_argument(f"--{o}", default="")
    a = p.parse_args(argv)
    given = {o: getattr(a, o.replace("-", "_")) for o in OPTIONS}
    if a.from_env:
        given = {o: os.environ.get(f"HVRUN_{make_name(o)}", "") for o in OPTIONS}

    def number(option: str, lo: int, hi: int) -> int | None:
        text = given[option].strip()
        if not text:
            return None
        if not text.isdigit():
            raise UserError(f"{make_name(option)}={given[option]} is not a number (use {lo} to {hi})")
        n = int(text)
        if not lo <= n <= hi:
            raise UserError(f"{make_name(option)}={text}: use {lo} to {hi}")
        return n

    if given["kernel"]:
        kernel, initrd, bootargs, mem, smp = Path(given["kernel"]), given["initrd"], given["append"], 128 * MIB, 1
    else:
        if why := fetch_linux(quiet=False):
            raise UserError(f"no default Linux guest ({why}): pass your own with KERNEL=path/to/Image [INITRD=...], "
                            f"or boot the demo guest with KERNEL={DEMO_GUEST.relative_to(ROOT)}")
        kernel, initrd = LINUX_DIR / "Image", given["initrd"] or str(LINUX_DIR / "initramfs.cpio")
        bootargs, mem, smp = given["append"] or DEFAULT_LINUX_ARGS, 256 * MIB, 2
    if given["mem"]:
        mem = parse_size(given["mem"], "MEM")
    smp = number("smp", 1, 64) or smp
    cpus = number("cpus", 1, 8)
    vms = number("vms", 1, 8) or 1
    if given["pauth"] and given["pauth"] not in ("impdef", "qarma5"):
        raise UserError(f"PAUTH={given['pauth']}: use impdef or qarma5")
    g = Guest(kernel=kernel, initrd=Path(initrd) if initrd else None, bootargs=bootargs, mem=mem, smp=smp)
    pstore = None if given["pstore"] == "none" else Path(given["pstore"]) if given["pstore"] else DEFAULT_PSTORE
    # DISK="a.img b.img:ro": VM 0's disks, in order (vda, vdb, ... in a Linux guest); `:ro`
    # attaches one read-only.
    disks = [Disk(Path(d[:-3]), True) if d.endswith(":ro") else Disk(Path(d)) for d in given["disk"].split()]
    # ROOT=/dev/vdX: the default initramfs mounts that disk (ext4) and switches to it.
    if root := given["root"].strip():
        if given["kernel"]:
            raise UserError(f"ROOT={root} is for the default kernel's initramfs; with KERNEL=, put root=... in APPEND")
        if not re.fullmatch(r"/dev/vd[a-z]", root):
            raise UserError(f"ROOT={root}: use /dev/vda for the first DISK, /dev/vdb for the second, ...")
        if ord(root[-1]) - ord("a") >= len(disks):
            raise UserError(f"ROOT={root} but DISK gives {len(disks)} disk(s)")
        g.bootargs = f"{g.bootargs} hvroot={root}"
    net = given["net"].strip()
    if net not in ("", "user"):
        raise UserError(f"NET={net}: use NET=user (QEMU's user networking as the uplink)")
    hostfwd = given["hostfwd"].split()
    if hostfwd and not net:
        raise UserError("HOSTFWD needs NET=user")
    if net and not given["kernel"]:
        g.bootargs = f"{g.bootargs} hvnet=dhcp"
    m = Machine(guests=[dataclasses.replace(g, disks=disks)] + [g] * (vms - 1), cpus=cpus, hv_args=given["hv-args"], pauth=given["pauth"] or "impdef", gdb=a.mode == "debug",
                pstore=pstore, net=bool(net), hostfwd=hostfwd, extra=shlex.split(given["qemu-extra"]))
    if hostfwd:
        uplink_args(hostfwd)
    m.mode = a.mode  # type: ignore[attr-defined]
    if cpus is None and smp > 8 and not re.search(r"(^|\s)(vm\d\.)?overcommit=on(\s|$)", m.hv_args):
        raise UserError(f"SMP={smp}: the machine has at most 8 CPUs; give fewer vCPUs, or let them share CPUs "
                        "with HVARGS=overcommit=on")
    host = host_memory()
    needed = sum(g.mem for g in m.guests)
    if host is not None and needed + 256 * MIB > host:
        raise UserError(f"MEM={given['mem'] or mem // MIB}"
                        f"{f' x VMS={vms}' if vms > 1 else ''}: the guests need {needed / (1 << 30):.1f} GiB "
                        f"but this host has {host / (1 << 30):.1f} GiB")
    return m


def port_in_use(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


# What QEMU's exit status means (README, Exit status).
STATUS_MEANING = {0: "every VM powered off", 1: "a test verdict failed", 2: "a VM crashed or could not be built",
                  3: "hypervisor panic", 4: "no guest given"}


def supervise(cmd: list[str], pstore: Path | None) -> int:
    """Runs QEMU on this terminal and returns its exit status. QEMU's own error lines pass
    through; an image-lock error on the pstore disk gets one line saying what to do."""
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    locked = False
    for raw in iter(p.stderr.readline, b""):
        line = raw.decode(errors="replace")
        sys.stderr.write(line)
        sys.stderr.flush()
        locked |= "Failed to get" in line and "lock" in line
    status = p.wait()
    if locked and pstore:
        print(f"error: {pstore} is in use by another QEMU (another make run?): give this one its own, "
              f"e.g. PSTORE=target/pstore2.img, or PSTORE=none", file=sys.stderr)
    elif status in STATUS_MEANING and status != 0:
        print(f"machine exit status {status}: {STATUS_MEANING[status]}", file=sys.stderr)
    return status


def main(argv: list[str]) -> int:
    try:
        m = machine_from_args(argv)
        cmd = command(m)
        if m.gdb and port_in_use(GDB_PORT):
            raise UserError(f"port {GDB_PORT} (QEMU's gdb stub) is in use: is another make debug running?")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if m.mode == "print":  # type: ignore[attr-defined]
        print(shlex.join(cmd))
        return 0
    if shutil.which(QEMU) is None:
        print(f"error: {QEMU} not found: run scripts/setup.sh", file=sys.stderr)
        return 2
    if m.gdb:
        print(f"QEMU is halted with its gdb stub on port {GDB_PORT}. In another terminal:\n"
              f"  gdb-multiarch {HYPERVISOR_ELF.relative_to(ROOT)} -ex 'target remote :{GDB_PORT}'\n"
              f"Quit QEMU with Ctrl-A X.", file=sys.stderr)
    return supervise(cmd, m.pstore)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
