#!/usr/bin/env python3
"""When this machine stops running a thread that nothing in it should stop.

Sleeps 0.5 ms in a loop for SECS seconds and prints every oversleep longer
than --over-ms as "<CLOCK_MONOTONIC s> <oversleep ms>". Run it at real-time
priority, so that no thread of the guest can keep it from its CPU:

  chrt -f 50 python3 pause_probe.py 20
  taskset -c 0 chrt -f 50 python3 pause_probe.py 10    # one per vCPU

An oversleep of several ms then means the vCPU did not run (or the kernel
kept it with interrupts off). The times are CLOCK_MONOTONIC, the clock of
the append bench's `--slow-ms` windows, so the two can be laid side by side.
Used for the numbers in docs/BENCHMARKS.md ("the VM's own pauses").
"""
import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("secs", type=float, help="how long to watch")
    p.add_argument("--over-ms", type=float, default=2.0, help="report oversleeps longer than this")
    args = p.parse_args()
    nap, over = 0.0005, args.over_ms / 1000
    end = time.monotonic() + args.secs
    seen = []
    while True:
        t0 = time.monotonic()
        time.sleep(nap)
        t1 = time.monotonic()
        if t1 - t0 - nap > over:
            seen.append((t0, t1 - t0 - nap))
        if t1 > end:
            break
    # (Printed at the end, so that printing never delays a measurement.)
    for t0, late in seen:
        print(f"{t0:.3f} {late * 1000:.1f}")


if __name__ == "__main__":
    main()
