#!/usr/bin/env python3
"""Restart latency of a cluster on 127.0.0.1:PORT whose workers answer
/healthz with {"pid": ...}: kill -9 the worker that answered, then time
until its replacement (a pid never seen before) answers (ROUNDS times, 200 ms apart).
Prints the rest of one JSON object (bench/run.sh adds its start):
"median_ms":..., "p90_ms":..., "max_ms":..., "rounds":N}.

Usage: restart.py PORT [ROUNDS]
"""
import http.client
import json
import os
import signal
import sys
import time


def healthz_pid(port):
    try:
        # Short: a request handed to the killed worker never answers (Node's
        # primary may still pass it one); the next poll tries again.
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.1)
        c.request("GET", "/healthz")
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status != 200:
            return None
        return json.loads(body)["pid"]
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None


def main():
    port = int(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    samples = []
    # Every pid that ever answered: the replacement is a pid not in it
    # (with two workers, the other one answers at once and does not count).
    seen = set()
    for _ in range(rounds):
        time.sleep(0.2)
        for _ in range(20):
            p = healthz_pid(port)
            if p is not None:
                seen.add(p)
        pid = healthz_pid(port)
        if pid is None:
            continue
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        deadline = t0 + 10
        while time.perf_counter() < deadline:
            new = healthz_pid(port)
            if new is not None and new not in seen:
                samples.append((time.perf_counter() - t0) * 1000)
                seen.add(new)
                break
    samples.sort()
    if not samples:
        print('"median_ms":null,"p90_ms":null,"max_ms":null,"rounds":0}')
        return
    at = lambda q: samples[round((len(samples) - 1) * q)]
    print('"median_ms":%.2f,"p90_ms":%.2f,"max_ms":%.2f,"rounds":%d}'
          % (at(0.5), at(0.9), samples[-1], len(samples)))


main()
