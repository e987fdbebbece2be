#!/usr/bin/env python3
"""Writes an initramfs (cpio "newc", uncompressed) from host files, without cpio(1):

    mkinitramfs.py OUT SRC=DEST [SRC=DEST ...]

Each DEST is a path in the initramfs (its directories are created); files keep their
mode. /dev/console is added so the kernel can open a console before /dev is mounted."""
import os
import stat
import sys


def entry(name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: tuple[int, int] = (0, 0)) -> bytes:
    name_b = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
    header = b"070701" + b"".join(b"%08x" % f for f in fields)
    out = header + name_b
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def main() -> int:
    out_path, specs = sys.argv[1], sys.argv[2:]
    dirs, files = {"dev", "proc", "sys", "tmp", "bin", "sbin", "root"}, []
    for spec in specs:
        src, dest = spec.split("=", 1)
        dest = dest.strip("/")
        files.append((src, dest))
        parts = dest.split("/")[:-1]
        for i in range(len(parts)):
            dirs.add("/".join(parts[: i + 1]))
    blob = bytearray()
    ino = 1
    for d in sorted(dirs):
        blob += entry(d, stat.S_IFDIR | 0o755, ino=ino)
        ino += 1
    blob += entry("dev/console", stat.S_IFCHR | 0o600, ino=ino, rdev=(5, 1))
    ino += 1
    for src, dest in files:
        with open(src, "rb") as f:
            data = f.read()
        mode = stat.S_IFREG | (os.stat(src).st_mode & 0o777)
        blob += entry(dest, mode, data, ino=ino)
        ino += 1
    blob += entry("TRAILER!!!", 0)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
