#!/usr/bin/env python3
"""Hostile input against one broker, with its resident memory measured before and after each
attack (the figures in the closing note of the hardening work).

usage: scripts/attack_rss.py [--port 17700] [--binary target/release/primary]

Starts a lone broker (compute off) on 127.0.0.1:PORT, then in turn: 5,000 idle connections;
200 connections each sending 1 MiB without a newline; 100,000 malformed lines; a subscriber
that never reads while 30,000 1 KiB messages flow to it and to a fast subscriber. After each
attack it checks that the broker still answers PING and prints its RSS. Everything runs on
loopback and stops by itself; the broker is stopped by its pid at the end."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ask(port, line):
    with connect(port) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=17700)
    ap.add_argument("--binary", default="target/release/primary")
    args = ap.parse_args()
    port = args.port
    broker = subprocess.Popen(
        [args.binary, str(port), "--bind", "127.0.0.1", "--compute-ms", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = []
    try:
        deadline = time.time() + 10
        while True:
            try:
                assert ask(port, "PING") == "PONG"
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        time.sleep(0.3)

        def measure(name, attack):
            before = rss_kib(broker.pid)
            detail = attack()
            time.sleep(0.5)
            after = rss_kib(broker.pid)
            alive = ask(port, "PING") == "PONG"
            results.append((name, before, after, alive, detail))
            print(f"{name}: RSS {before} KiB -> {after} KiB, answers PING: {alive}; {detail}",
                  file=sys.stderr)

        def idle_connections():
            conns = [connect(port) for _ in range(5000)]
            time.sleep(1)
            peak = rss_kib(broker.pid)
            for c in conns:
                c.close()
            return f"peak {peak} KiB with 5,000 open"

        def long_lines():
            refused = 0
            blob = b"x" * (1 << 20)
            for _ in range(200):
                with connect(port) as s:
                    try:
                        s.sendall(blob)
                    except OSError:
                        pass
                    try:
                        if s.makefile("rb").readline().startswith(b"ERR|line too long"):
                            refused += 1
                    except OSError:
                        pass
            return f"{refused}/200 got ERR|line too long"

        def garbage():
            with connect(port) as s:
                lines = [b"FROB|x", b"", b"|||", b"PUBLISH", b"\xff\xfe", b"publish|t|x"]
                payload = b"".join(lines[i % len(lines)] + b"\n" for i in range(100_000))
                reader = s.makefile("rb")
                threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
                errs = sum(1 for _ in range(100_000) if reader.readline().startswith(b"ERR|"))
            return f"{errs}/100000 answered ERR"

        def slow_consumer():
            slow = connect(port)
            slow.sendall(b"SUBSCRIBE|t\n")
            fast = connect(port)
            fast.sendall(b"SUBSCRIBE|t\nPING\n")
            freader = fast.makefile("rb")
            assert freader.readline().strip() == b"PONG"
            got = [0]

            def read_all():
                for _ in range(30_000):
                    if not freader.readline():
                        break
                    got[0] += 1

            t = threading.Thread(target=read_all)
            t.start()
            pub = connect(port)
            filler = "x" * 1018
            data = "".join(f"PUBLISH|t|{i:05}{filler}\n" for i in range(30_000)).encode()
            threading.Thread(target=pub.sendall, args=(data,), daemon=True).start()
            preader = pub.makefile("rb")
            acks = sum(1 for _ in range(30_000) if preader.readline().strip() == b"ACK")
            t.join(60)
            peak = rss_kib(broker.pid)
            status = ask(port, "STATUS")
            slow_cut = [kv for kv in status.split("|") if kv.startswith("slow_consumers=")]
            for c in (slow, fast, pub):
                c.close()
            return (f"{acks} ACKed, fast subscriber got {got[0]}, {slow_cut[0]}, "
                    f"RSS at the end of the flood {peak} KiB")

        measure("5,000 idle connections", idle_connections)
        measure("200 × 1 MiB without a newline", long_lines)
        measure("100,000 malformed lines", garbage)
        measure("slow consumer, 30,000 × 1 KiB", slow_consumer)
    finally:
        broker.send_signal(signal.SIGINT)
        try:
            broker.wait(5)
        except subprocess.TimeoutExpired:
            broker.kill()
    print("| attack | RSS before | RSS after | still answers | detail |")
    print("|---|---|---|---|---|")
    for name, before, after, alive, detail in results:
        print(f"| {name} | {before // 1024} MiB | {after // 1024} MiB | {'yes' if alive else 'NO'} | {detail} |")
    return 0 if all(r[3] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
