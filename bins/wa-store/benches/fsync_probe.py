#!/usr/bin/env python3
"""How long a journal-like fdatasync takes on a disk, and what disturbs it.

Writes 3,000-byte records, each followed by fdatasync, for a few seconds,
into a file in DIR, and prints the sync latencies. Used for the numbers in
docs/BENCHMARKS.md ("zero-filled journal segments", "the discard mount
option").

  fsync_probe.py DIR --journal appended|zeroed|fallocated [--engine]
      --engine: a thread writes a 4 MiB file, fsyncs it and its directory,
      every 50 ms (an engine's flushes beside the journal)
  fsync_probe.py DIR --journal zeroed --delete-mib 64
      a file of that size, written and synced first, is deleted 2 s in
      (with the `discard` mount option its blocks are TRIMmed then)
"""
import argparse
import os
import threading
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("dir")
ap.add_argument("--journal", choices=["appended", "zeroed", "fallocated"], default="zeroed")
ap.add_argument("--engine", action="store_true")
ap.add_argument("--delete-mib", type=int, default=0)
ap.add_argument("--secs", type=float, default=8)
a = ap.parse_args()

MIB = b"\0" * (1 << 20)
os.makedirs(a.dir, exist_ok=True)
path = os.path.join(a.dir, "probe-journal")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
if a.journal == "zeroed":
    for _ in range(64):
        os.write(fd, MIB)
    os.fsync(fd)
    os.lseek(fd, 0, 0)
elif a.journal == "fallocated":
    os.posix_fallocate(fd, 0, 64 << 20)
    os.fsync(fd)

stop = False
events = []


def engine():
    i = 0
    while not stop:
        f = os.open(os.path.join(a.dir, f"probe-sst{i % 8}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(f, MIB * 4)
        os.fsync(f)
        os.close(f)
        d = os.open(a.dir, os.O_RDONLY)
        os.fsync(d)
        os.close(d)
        i += 1
        time.sleep(0.05)


def deleter(big):
    time.sleep(2)
    t = time.monotonic()
    os.unlink(big)
    events.append(f"unlink of {a.delete_mib} MiB at 2 s took {(time.monotonic() - t) * 1e3:.1f} ms")


if a.engine:
    threading.Thread(target=engine, daemon=True).start()
if a.delete_mib:
    big = os.path.join(a.dir, "probe-big")
    b = os.open(big, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(a.delete_mib):
        os.write(b, MIB)
    os.fsync(b)
    os.close(b)
    threading.Thread(target=deleter, args=(big,), daemon=True).start()

rec = b"r" * 3000
lat, slow = [], []
t0 = time.monotonic()
while time.monotonic() - t0 < a.secs:
    os.write(fd, rec)
    t = time.monotonic()
    os.fdatasync(fd)
    e = time.monotonic() - t
    lat.append(e)
    if e > 0.01:
        slow.append(f"{e * 1e3:.1f} ms at {t - t0:.2f} s")
stop = True
lat.sort()
n = len(lat)
print(f"{n} syncs ({a.journal}{', engine' if a.engine else ''}): p50 {lat[n // 2] * 1e3:.2f} p99 {lat[int(n * .99)] * 1e3:.2f} "
      f"p99.9 {lat[int(n * .999)] * 1e3:.2f} max {lat[-1] * 1e3:.2f} ms")
for e in events:
    print(e)
print("syncs over 10 ms:", ", ".join(slow) or "none")
for name in os.listdir(a.dir):
    if name.startswith("probe-"):
        os.unlink(os.path.join(a.dir, name))
