#!/usr/bin/env python3
"""Strangers in every connection slot of the witness, then a frozen primary: is it still
replaced in the usual time? (Hardening, round three, item 2.)

usage: scripts/witness_fill.py [--mode attack|control] [--port 17900] [--bin target/release]

Starts a witness on 127.0.0.1:PORT+2 with --secret, then (attack mode) a stranger (this
script) that holds 80 connections to it from 127.0.0.2, each sending PING every 2 s and
dialling again 3 ms after it is closed or refused; it knows no secret. Then a pair on PORT
(primary) and PORT+1 (backup) with the same --secret and --witness, a subscriber, and a
test_publisher at 10 Hz. At 3 s the primary is paused (SIGSTOP) for 10 s; at 16 s the
publisher is stopped. Prints how many messages were ACKed, how many of those the
subscriber never printed, the longest gap between ACKs, and how many times a broker took
over with the witness's grant (its log's `taking over … the witness granted` lines). Everything is on loopback and stops by itself; only
the processes it started are signalled."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

SECRET = "witness-fill"


def fill(target, source, stop, count):
    def hold():
        while not stop.is_set():
            try:
                s = socket.socket()
                s.bind((source, 0))
                s.settimeout(0.05)
                s.connect(target)
                last = 0.0
                while not stop.is_set():
                    if time.time() - last > 2:
                        s.sendall(b"PING\n")
                        last = time.time()
                    try:
                        if not s.recv(256):
                            break
                    except socket.timeout:
                        continue
                s.close()
            except OSError:
                pass
            time.sleep(0.003)

    for _ in range(count):
        threading.Thread(target=hold, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["attack", "control"], default="attack")
    ap.add_argument("--port", type=int, default=17900)
    ap.add_argument("--bin", default="target/release")
    a = ap.parse_args()
    p, b, w = (f"127.0.0.1:{a.port + i}" for i in range(3))
    env = dict(os.environ, BROKER_SECRET=SECRET)
    log_path = f"/tmp/witness-fill-{a.mode}.log"
    log = open(log_path, "w")
    stop = threading.Event()
    procs = []
    try:
        procs.append(subprocess.Popen([f"{a.bin}/witness", str(a.port + 2), "--bind",
                                       "127.0.0.1"], env=env, stdout=log, stderr=log))
        time.sleep(0.3)
        if a.mode == "attack":
            fill(("127.0.0.1", a.port + 2), "127.0.0.2", stop, 80)
            time.sleep(1.0)
        return run(a, p, b, w, env, log, log_path, stop, procs)
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def run(a, p, b, w, env, log, log_path, stop, procs):
    primary = subprocess.Popen([f"{a.bin}/primary", str(a.port), b, "--witness", w], env=env,
                               stdout=log, stderr=log)
    procs.append(primary)
    time.sleep(0.3)
    procs.append(subprocess.Popen([f"{a.bin}/backup", str(a.port + 1), p, "--witness", w],
                                  env=env, stdout=log, stderr=log))
    time.sleep(3.0)  # the witness's restart wait, then the primary's first lease
    sub = subprocess.Popen([f"{a.bin}/subscriber", "t", p, b], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(sub)
    time.sleep(0.5)
    pub = subprocess.Popen([f"{a.bin}/test_publisher", "t", p, b, "--rate-hz", "10",
                            "--timestamps"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    procs.append(pub)
    t0 = time.time()

    def at(t):
        time.sleep(max(0.0, t0 + t - time.time()))

    delivered = set()

    def read_subscriber():
        for line in sub.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                delivered.add(int(parts[1]))

    reader = threading.Thread(target=read_subscriber, daemon=True)
    reader.start()
    at(3)
    primary.send_signal(signal.SIGSTOP)
    at(13)
    primary.send_signal(signal.SIGCONT)
    at(16)
    pub.send_signal(signal.SIGINT)
    try:
        out = pub.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        pub.kill()
        out = pub.communicate()[0]
    acked = {}
    for line in out.split("\n"):
        parts = line.split()
        if len(parts) == 3 and parts[1] == "ACK":
            acked[int(parts[2])] = int(parts[0])
    deadline = time.time() + 30
    while time.time() < deadline and not set(acked) <= delivered:
        time.sleep(0.1)
    stop.set()
    reader.join(timeout=1)
    log.flush()
    takeovers = sum("taking over" in line and "witness granted" in line for line in open(log_path))
    lost = sorted(set(acked) - delivered)
    times = sorted(acked.values())
    gap = max((y - x for x, y in zip(times, times[1:])), default=0)
    print(f"mode={a.mode} acked={len(acked)} lost={len(lost)} longest_ack_gap_ms={gap} "
          f"takeovers={takeovers}" + (f" first_lost={lost[:5]}" if lost else ""))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
