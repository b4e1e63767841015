#!/usr/bin/env python3
"""A stranger in the backup's connection slots, then an ordinary fault: does the pair still
lose nothing it ACKed? (Hardening, round three, item 1.)

usage: scripts/squat_attack.py [--mode attack|control] [--source 127.0.0.2] [--port 17800]
                               [--bin target/release]

Starts a pair on 127.0.0.1:PORT (primary) and PORT+1 (backup) with --secret and
--client-secret and --max-connections 40, a subscriber, and a test_publisher at 10 Hz. In
attack mode a stranger (this script) keeps 60 connections to the backup open from SOURCE (a
loopback address: 127.0.0.2 stands for another host, 127.0.0.1 for the primary's own host),
dialling again 3 ms after any is closed or refused; it never authenticates. Then: at 3 s the
backup is paused (SIGSTOP) for 3 s, at 9 s the primary is killed (SIGKILL), at 14 s the
publisher is stopped, and the subscriber once it has printed every ACKed message (or 30 s
later). Prints how many messages were ACKed, how many of those the subscriber never printed,
and the longest gap between ACKs. Everything is on
loopback and stops by itself; only the processes it started are signalled."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

SECRET, CLIENT_SECRET = "squat-pair", "squat-clients"


def squat(target, source, stop, count):
    def hold():
        while not stop.is_set():
            try:
                s = socket.socket()
                s.bind((source, 0))
                s.settimeout(0.05)
                s.connect(target)
                while not stop.is_set():
                    try:
                        if not s.recv(256):
                            break
                    except socket.timeout:
                        continue
                s.close()
            except OSError:
                pass
            time.sleep(0.003)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["attack", "control"], default="attack")
    ap.add_argument("--source", default="127.0.0.2")
    ap.add_argument("--port", type=int, default=17800)
    ap.add_argument("--bin", default="target/release")
    a = ap.parse_args()
    p, b = f"127.0.0.1:{a.port}", f"127.0.0.1:{a.port + 1}"
    env = dict(os.environ, BROKER_SECRET=SECRET, BROKER_CLIENT_SECRET=CLIENT_SECRET)
    common = ["--max-connections", "40", "--client-secret", CLIENT_SECRET]
    log = open(f"/tmp/squat-{a.mode}-brokers.log", "w")
    primary = subprocess.Popen([f"{a.bin}/primary", str(a.port), b, *common], env=env,
                               stdout=log, stderr=log)
    time.sleep(0.3)
    backup = subprocess.Popen([f"{a.bin}/backup", str(a.port + 1), p, *common], env=env,
                              stdout=log, stderr=log)
    stop = threading.Event()
    procs = [primary, backup]
    try:
        return run(a, p, b, env, primary, backup, stop, procs)
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def run(a, p, b, env, primary, backup, stop, procs):
    time.sleep(1.5)
    if a.mode == "attack":
        squat(("127.0.0.1", a.port + 1), a.source, stop, 60)
        time.sleep(1.0)
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

    at(3)
    backup.send_signal(signal.SIGSTOP)
    at(6)
    backup.send_signal(signal.SIGCONT)
    at(9)
    primary.kill()
    delivered = set()

    def read_subscriber():
        for line in sub.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                delivered.add(int(parts[1]))

    reader = threading.Thread(target=read_subscriber, daemon=True)
    reader.start()
    at(14)
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
    lost = sorted(set(acked) - delivered)
    times = sorted(acked.values())
    gap = max((b - a for a, b in zip(times, times[1:])), default=0)
    print(f"mode={a.mode} source={a.source if a.mode == 'attack' else '-'} acked={len(acked)} "
          f"lost={len(lost)} longest_ack_gap_ms={gap}" + (f" first_lost={lost[:5]}" if lost else ""))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
