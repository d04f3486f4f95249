#!/usr/bin/env python3
"""A local user racing the agent: swaps each pair of paths with renameat2(RENAME_EXCHANGE) (one atomic
step, so at every instant one of the two is at each path), over and over with short random pauses,
until SIGTERM. Then it puts every pair back as it found it and prints how many swaps it made.

Usage: exchange-racer.py A1 B1 [A2 B2 ...]   (prints "ready" once it runs)
"""
import ctypes
import os
import random
import signal
import sys
import time

AT_FDCWD = -100
RENAME_EXCHANGE = 2

libc = ctypes.CDLL(None, use_errno=True)
pairs = [(a.encode(), b.encode()) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]
swaps = [0] * len(pairs)
stop = False


def on_term(_signum, _frame):
    global stop
    stop = True


def exchange(i):
    a, b = pairs[i]
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a.decode())
    swaps[i] += 1


signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
# mostly back to back; now and then a pause, so that some operations fall in a quiet moment
pauses = [0, 0, 0, 0.0002, 0.001, 0.003]
while not stop:
    for i in range(len(pairs)):
        exchange(i)
    pause = random.choice(pauses)
    if pause:
        time.sleep(pause)
for i in range(len(pairs)):
    if swaps[i] % 2:
        exchange(i)
print(sum(swaps), flush=True)
