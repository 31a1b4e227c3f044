#!/usr/bin/env python3
"""CPU use over time, per process and for the host's processing thread.

    cpu-timeline.py --proc tansu=PID --proc host=PID --proc rtap-gen=PID \
        --thread host=PID --every 1 --window 10

Every --every seconds it reads /proc/PID/task/*/schedstat (nanoseconds a
thread ran, and waited runnable for a core). Until the first process exits
or SIGTERM arrives; then it prints, per --window seconds, the share of a
core each process used and, for each --thread (the main thread of that
process: the host's processing thread), the share it ran and the share it
waited, runnable, for a core. A thread that runs 75 % and waits 20 % of the
time is saturated, though its CPU share alone says 75 %.
"""
import argparse
import os
import signal
import sys
import time


def task_times(pid, tid=None):
    """(ran ns, waited ns) summed over a process's threads, or one thread."""
    tids = [tid] if tid else os.listdir(f"/proc/{pid}/task")
    ran = waited = 0
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                r, w, _ = f.read().split()
        except (OSError, ValueError):
            continue
        ran += int(r)
        waited += int(w)
    return ran, waited


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proc", action="append", default=[], help="NAME=PID")
    ap.add_argument("--thread", action="append", default=[], help="NAME=PID (its main thread)")
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--window", type=float, default=10.0)
    a = ap.parse_args()
    procs = [(n, int(p)) for n, p in (x.split("=", 1) for x in a.proc)]
    threads = [(n, int(p)) for n, p in (x.split("=", 1) for x in a.thread)]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def snap():
        return (
            time.monotonic(),
            {n: task_times(p)[0] for n, p in procs},
            {n: task_times(p, p) for n, p in threads},
        )

    windows = []  # (seconds, {proc: ran}, {thread: (ran, waited)}) deltas
    last_window = snap()
    while not stop and all(os.path.exists(f"/proc/{p}") for _, p in procs):
        time.sleep(a.every)
        try:
            now = snap()
        except OSError:  # a process exited during the sleep
            break
        if now[0] - last_window[0] >= a.window - a.every / 2:
            windows.append((
                now[0] - last_window[0],
                {n: now[1][n] - last_window[1][n] for n in now[1]},
                {n: (now[2][n][0] - last_window[2][n][0], now[2][n][1] - last_window[2][n][1]) for n in now[2]},
            ))
            last_window = now
    if not windows:
        return
    head = ["window"] + [f"{n} CPU" for n, _ in procs]
    for n, _ in threads:
        head += [f"{n} thread ran", f"{n} thread waited"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    t0 = 0.0
    for secs, pr, th in windows:
        row = [f"{t0:.0f}–{t0 + secs:.0f} s"]
        row += [f"{100 * pr[n] / 1e9 / secs:.0f} %" for n, _ in procs]
        for n, _ in threads:
            row += [f"{100 * th[n][0] / 1e9 / secs:.0f} %", f"{100 * th[n][1] / 1e9 / secs:.0f} %"]
        print("| " + " | ".join(row) + " |")
        t0 += secs
    sys.stdout.flush()


if __name__ == "__main__":
    main()
