#!/usr/bin/env python3
"""The layer check of the EL2 crate (hypervisor/src): a module may name only modules of its
own layer and of the layers below it. Reads every `crate::`, `super::` and `self::` path
(in `use` lines and in code, braces expanded) and reports each that reaches upward.

    scripts/layers.py               check hypervisor/src; exit status 1 on any violation
    scripts/layers.py --self-test   show that the check catches an upward import

The layers, lowest first (README's Layout section draws them):
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "hypervisor" / "src"

# Top-level module -> (rank, what the layer is). Modules of equal rank may name each other.
LAYERS: dict[str, tuple[int, str]] = {
    "arch": (0, "assembly, system registers, vectors, TLB maintenance, the per-CPU header and stacks"),
    "percpu": (1, "per-CPU state: online, MPIDR, current VM, the panic stop"),
    "mm": (2, "frames and heap, EL2 tables, guest RAM and its stage-2 space"),
    "boot": (3, "the host device tree, the guest image loader"),
    "drivers": (4, "what the hypervisor drives: GICv3, PL011, virtio-blk, virtio-net"),
    "console": (5, "the log, guest lines, the console tail, terminal input queue"),
    "pstore": (6, "crash records on the pstore disk"),
    "vdev": (7, "what guests see: vGIC, vUART, pvpanic, virtio devices"),
    "vm": (8, "VMs and vCPUs, exits, hypercalls, the VM registry, the switch"),
    "sched": (9, "run queues, idle, the slow exit path, VM start and retirement"),
    "panic": (10, "the panic path"),
    "main": (10, "boot sequence (the crate root)"),
}
__doc__ += "".join(f"    {r:2} {name:8} {what}\n" for name, (r, what) in sorted(LAYERS.items(), key=lambda kv: kv[1][0]))

PATH_START = re.compile(r"\b(crate|super|self)\b(?=\s*::)")
IDENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


def strip(text: str) -> str:
    """The source without comments, string and char literals (kept as blanks, so that line
    numbers stay)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"' or (c == "r" and re.match(r'r#*"', text[i:i + 8]) and (i == 0 or not text[i - 1].isalnum())):
            m = re.match(r'r(#*)"', text[i:])
            if c == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                j += 1
            else:
                end = '"' + m.group(1)
                j = text.find(end, i + len(m.group(0)))
                j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_tree(s: str, i: int) -> tuple[list[list[str]], int]:
    """Parses a path (`a::b::c`, `a::{b, c::d}`, `a::*`) at s[i:]; returns the paths it
    names (lists of segments) and where it ends."""
    segs: list[str] = []
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if s.startswith("{", i):
            paths, i = [], i + 1
            while True:
                sub, i = parse_tree(s, i)
                paths += [segs + p for p in sub]
                while i < len(s) and s[i] in " \t\n,":
                    i += 1
                if i >= len(s) or s[i] == "}":
                    return paths or [segs], i + 1
        if s.startswith("*", i):
            return [segs], i + 1
        m = IDENT.match(s, i)
        if not m:
            return [segs], i
        segs.append(m.group(1))
        i = m.end()
        m2 = re.match(r"\s*::", s[i:])
        if not m2:
            return [segs], i
        i += m2.end()


def module_of(path: Path, src: Path) -> list[str]:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["main"]:
        return []
    return parts


def resolve(module: list[str], path: list[str]) -> list[str]:
    head, rest = path[0], path[1:]
    if head == "crate":
        base = []
    elif head == "self":
        base = list(module)
    else:  # super, possibly repeated
        base = list(module[:-1])
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    return base + rest


def layer(top: str | None) -> tuple[str, int] | None:
    name = top if top in LAYERS else "main"
    return name, LAYERS[name][0]


def check(src: Path) -> list[str]:
    problems = []
    top_modules = {p.stem if p.suffix == ".rs" else p.name for p in src.iterdir()} - {"main"}
    for m in sorted(top_modules - set(LAYERS)):
        problems.append(f"{src.name}/{m}: a top-level module in no layer (add it to LAYERS in scripts/layers.py)")
    for f in sorted(src.rglob("*.rs")):
        module = module_of(f, src)
        own_name, own_rank = layer(module[0] if module else None)
        text = strip(f.read_text())
        for start in PATH_START.finditer(text):
            for path in parse_tree(text, start.start())[0]:
                target = resolve(module, path)
                # crate::X where X is an item of the crate root (VERSION): the root's layer.
                top = target[0] if target and target[0] in top_modules else None
                name, rank = layer(top)
                if rank > own_rank:
                    line = text.count("\n", 0, start.start()) + 1
                    problems.append(f"{f.relative_to(src.parent.parent)}:{line}: layer {own_name} ({own_rank}) names "
                                    f"{'::'.join(path)} in layer {name} ({rank}), a higher layer")
    return problems


def self_test() -> int:
    """A tiny crate with one upward import and one allowed one: the check must report
    exactly the upward one."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "hv" / "src"
        (src / "arch").mkdir(parents=True)
        (src / "vm").mkdir()
        (src / "main.rs").write_text("mod arch;\nmod vm;\n")
        (src / "arch" / "mod.rs").write_text("// crate::vm::Vm in a comment is fine\nuse crate::{percpu, vm::{exit::Next, Vm}};\n")
        (src / "percpu.rs").write_text("use crate::arch::cpu;\nfn f() { super::arch::x(); let s = \"crate::vm\"; }\n")
        (src / "vm" / "mod.rs").write_text("use super::super::arch::cpu;\nuse crate::percpu::this_cpu;\n")
        problems = check(src)
    expected = ["names crate::percpu in layer percpu", "names crate::vm::exit::Next in layer vm", "names crate::vm::Vm in layer vm"]
    ok = len(problems) == len(expected) and all(any(e in p for p in problems) for e in expected)
    for p in problems:
        print(f"  caught: {p}")
    print("layers self-test: " + ("the check catches upward imports" if ok else f"FAILED (got {problems})"))
    return 0 if ok else 1


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    problems = check(SRC)
    for p in problems:
        print(p)
    ranks = " < ".join(dict.fromkeys(n for n, _ in sorted(LAYERS.items(), key=lambda kv: kv[1][0])))
    if problems:
        print(f"layers: {len(problems)} upward import(s); the order is {ranks}")
        return 1
    print(f"layers: hypervisor/src keeps its layers ({ranks})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
