#!/usr/bin/env python3
"""Hostile input against one broker, with its resident memory measured before and after each
attack (the figures in the closing note of the hardening work).

usage: scripts/attack_rss.py [--port 17700] [--binary target/release/primary] [--only NAME,...]
                             [--conns 1000] [--subs 1000] [--name-bytes 65]

Starts a lone broker (compute off) on 127.0.0.1:PORT, then in turn: 5,000 idle connections
(idle); 200 connections each sending 1 MiB without a newline (long-lines); 100,000 malformed
lines (garbage); a subscriber that never reads while 30,000 1 KiB messages flow to it and to a
fast subscriber (slow); a client that reads another publisher's id off a MSG line and publishes
under it (spoof); six subscribers that read 16 KiB every 0.25 s while 60 KB messages flow to
them for at most 20 s or 30,000 messages (trickle; stopped early if the broker passes 3 GiB).
Then it stops that broker and starts another with --max-pending 2000 on PORT+1 for 14
subscribers of 14 topics that never read, flooded, and a publisher of an unrelated topic
(other-topics). Then a third broker, with the default limits, on PORT+2 for --conns connections
that each ask for --subs subscriptions to unique names of --name-bytes bytes (as many as the
budget lets them) and leave a 64 KiB line unfinished (subscriptions). After each attack it checks
that the broker still answers PING and prints its RSS. Everything runs on loopback and stops by
itself; each broker is stopped by its pid."""

import argparse
import os
import random
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


ATTACKS = ["idle", "long-lines", "garbage", "slow", "spoof", "trickle", "other-topics",
           "subscriptions"]
RSS_CAP_KIB = 3 << 20  # the trickle attack stops when the broker passes 3 GiB


def status(port):
    """The broker's STATUS line as a dict."""
    line = ask(port, "STATUS")
    return dict(kv.split("=", 1) for kv in line.split("|")[1:] if "=" in kv)


def read_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def subscribe(port, topic, rcvbuf=None):
    """A raw subscriber of `topic`, its subscription in place (it answered PING); `rcvbuf`
    shrinks its receive buffer, so that what it does not read waits in the broker."""
    if rcvbuf:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
    else:
        s = connect(port)
    s.sendall(f"SUBSCRIBE|{topic}\nPING\n".encode())
    assert read_exactly(s, 5) == b"PONG\n"
    return s


class PeakRss(threading.Thread):
    """Samples the broker's VmRSS every 0.1 s until stopped; sets `capped` past `cap_kib`."""

    def __init__(self, pid, cap_kib=None):
        super().__init__(daemon=True)
        self.pid, self.cap_kib = pid, cap_kib
        self.peak = 0
        self.capped = threading.Event()
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                rss = rss_kib(self.pid)
            except OSError:
                break
            self.peak = max(self.peak, rss)
            if self.cap_kib and rss > self.cap_kib:
                self.capped.set()
            self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.join(5)
        return self.peak


def hang_up(*socks):
    """Closes connections for good, even if a reader (a makefile, a thread) still holds them."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def start_broker(binary, port, extra=()):
    broker = subprocess.Popen(
        [binary, str(port), "--bind", "127.0.0.1", "--compute-ms", "0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while True:
        try:
            assert ask(port, "PING") == "PONG"
            break
        except OSError:
            if time.time() > deadline or broker.poll() is not None:
                stop_broker(broker)
                raise
            time.sleep(0.05)
    time.sleep(0.3)
    return broker


def stop_broker(broker):
    broker.send_signal(signal.SIGINT)
    try:
        broker.wait(5)
    except subprocess.TimeoutExpired:
        broker.kill()
        broker.wait(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=17700)
    ap.add_argument("--binary", default="target/release/primary")
    ap.add_argument("--only", default=",".join(ATTACKS),
                    help="comma-separated attacks to run, of: " + ", ".join(ATTACKS))
    ap.add_argument("--conns", type=int, default=1000,
                    help="connections of the subscriptions attack [1000]")
    ap.add_argument("--subs", type=int, default=1000,
                    help="subscriptions each of those connections asks for [1000]")
    ap.add_argument("--name-bytes", type=int, default=65,
                    help="length of their topic names, at least 12 [65]")
    args = ap.parse_args()
    only = [a.strip() for a in args.only.split(",") if a.strip()]
    unknown = [a for a in only if a not in ATTACKS]
    if unknown:
        ap.error(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}")
    port = args.port
    results = []
    broker = None

    def measure(name, attack):
        before = rss_kib(broker.pid)
        detail = attack()
        time.sleep(0.5)
        after = rss_kib(broker.pid)
        try:
            alive = ask(port, "PING") == "PONG"
        except OSError:
            alive = False
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
        st = ask(port, "STATUS")
        slow_cut = [kv for kv in st.split("|") if kv.startswith("slow_consumers=")]
        for c in (slow, fast, pub):
            c.close()
        return (f"{acks} ACKed, fast subscriber got {got[0]}, {slow_cut[0]}, "
                f"RSS at the end of the flood {peak} KiB")

    def spoofed_publisher_id():
        # A legit publisher with a random key; a spy that reads its id off a delivery and
        # publishes under it, far ahead in sequence, before the legit messages 11..200.
        key = random.SystemRandom().randrange(1 << 32, 1 << 63)
        spy = connect(port)
        spy.sendall(b"SUB|t\nPING\n")
        spy_reader = spy.makefile("rb")
        assert spy_reader.readline().strip() == b"PONG"
        legit = connect(port)
        legit_reader = legit.makefile("rb")

        def publish(n):
            legit.sendall(f"PUB|{key}|{n}|t|{n}\n".encode())
            return legit_reader.readline().strip().startswith(b"ACK|")

        acked = sum(publish(n) for n in range(1, 11))
        first = spy_reader.readline().decode().rstrip("\n").split("|", 5)
        assert first[0] == "MSG" and first[5] == "1", first
        legit_id, legit_seq = first[2], int(first[3])
        seen = {(first[2], first[5])}
        forged = [0, 0]  # forged messages delivered under another id, under the legit id

        def read_deliveries():
            try:
                for line in spy_reader:
                    f = line.decode().rstrip("\n").split("|", 5)
                    if f[0] == "MSG" and len(f) == 6:
                        if f[5] == "x":
                            forged[f[2] == legit_id] += 1
                        elif f[2] == legit_id:
                            seen.add((f[2], f[5]))
            except (OSError, ValueError):
                pass

        reader = threading.Thread(target=read_deliveries, daemon=True)
        reader.start()
        answers = []
        with connect(port) as forger:
            forger_reader = forger.makefile("rb")
            for seq in (legit_seq + 5000, 18446744073709551615):
                forger.sendall(f"PUB|{legit_id}|{seq}|t|x\n".encode())
                answers.append(forger_reader.readline().decode().strip().split("|")[0])
        acked += sum(publish(n) for n in range(11, 201))
        wanted = {(legit_id, str(n)) for n in range(1, 201)}
        deadline = time.time() + 5
        while not wanted <= seen and time.time() < deadline:
            time.sleep(0.05)
        delivered = len(wanted & seen)
        hang_up(spy, legit)
        reader.join(5)
        return (f"{delivered}/200 of the legit publisher's messages reached the spy's SUB "
                f"({acked}/200 ACKed); the 2 forged PUBs under its id got "
                f"{'/'.join(answers)} and were delivered {forged[1]} times under that id, "
                f"{forged[0]} under another")

    def trickling_subscribers():
        # Six subscribers that read, but only 16 KiB every 0.25 s (64 KiB/s each), while a
        # pipelined publisher sends 60 KB messages for at most 20 s or 30,000 messages, or
        # until the broker passes 3 GiB.
        cut_before = int(status(port).get("slow_consumers", 0))
        subs = [subscribe(port, "t") for _ in range(6)]
        stop = threading.Event()
        ended = [None] * 6  # "ERR" (got ERR|slow consumer), "closed", or None

        def trickle(i):
            s, tail = subs[i], b""
            s.settimeout(1.0)
            drain_until = None
            while True:
                if stop.is_set() and drain_until is None:
                    drain_until = time.time() + 5  # then read fast, to see the ERR or the close
                if drain_until is not None and time.time() > drain_until:
                    return
                try:
                    chunk = s.recv(1 << 20 if drain_until else 16384)
                except socket.timeout:
                    continue
                except OSError:
                    ended[i] = ended[i] or "closed"
                    return
                if not chunk:
                    ended[i] = ended[i] or "closed"
                    return
                if b"ERR|slow consumer" in tail + chunk:
                    ended[i] = "ERR"
                tail = chunk[-32:]
                if drain_until is None:
                    time.sleep(0.25)

        readers = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(6)]
        for r in readers:
            r.start()
        rss = PeakRss(broker.pid, RSS_CAP_KIB)
        rss.start()
        most = {}  # the highest `pending` and `queued_bytes` STATUS showed, every 0.5 s

        def poll_status():
            while not rss.done.is_set():
                try:
                    st = status(port)
                except OSError:
                    st = {}
                for k in ("pending", "queued_bytes"):
                    if k in st:
                        most[k] = max(most.get(k, 0), int(st[k]))
                rss.done.wait(0.5)

        poller = threading.Thread(target=poll_status, daemon=True)
        poller.start()
        pub = connect(port)
        line = b"PUBLISH|t|" + b"x" * 60_000 + b"\n"
        sent = [0]
        sending = threading.Event()
        sending.set()
        stalled = []
        start = time.time()

        def send():
            # Pipelined: the ACKs are read on this thread's caller.
            try:
                while (time.time() - start < 20 and sent[0] < 30_000
                       and not rss.capped.is_set()):
                    pub.sendall(line)
                    sent[0] += 1
            except OSError as e:
                stalled.append(f"the publisher's send failed ({e})")
            sending.clear()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        acked = 0
        other = {}
        buf, quiet = b"", 0
        pub.settimeout(1.0)
        while quiet < 15 and (sending.is_set() or acked + sum(other.values()) < sent[0]):
            try:
                chunk = pub.recv(65536)
            except socket.timeout:
                quiet += 1
                continue
            except OSError as e:
                stalled.append(f"the publisher's read failed ({e})")
                break
            if not chunk:
                stalled.append("the broker closed the publisher's connection")
                break
            quiet = 0
            *lines, buf = (buf + chunk).split(b"\n")
            for reply in lines:
                if reply.strip() == b"ACK":
                    acked += 1
                else:
                    key = reply.decode(errors="replace")[:40]
                    other[key] = other.get(key, 0) + 1
        if quiet >= 15:
            stalled.append("no answer to the publisher for 15 s")
        sender.join(20)
        elapsed = time.time() - start
        peak = rss.stop()
        poller.join(15)
        st = status(port)
        stop.set()
        for r in readers:
            r.join(10)
        hang_up(*subs, pub)
        parts = [f"{sent[0]} sent pipelined in {elapsed:.1f} s, {acked} ACKed"]
        parts += [f"{n} × `{k}`" for k, n in other.items()]
        parts += stalled
        parts.append(f"peak RSS {peak} KiB ({peak / 1024:.0f} MiB)")
        if rss.capped.is_set():
            parts.append("attack stopped at the 3 GiB cap")
        cut = int(st.get("slow_consumers", 0)) - cut_before
        parts.append(f"slow_consumers +{cut} (={st.get('slow_consumers', '?')})")
        parts += [f"{k} at most {v} (STATUS every 0.5 s), {st.get(k)} after"
                  for k, v in most.items()]
        parts.append(f"{sum(e == 'ERR' for e in ended)}/6 subscribers got ERR|slow consumer, "
                     f"{sum(e is not None for e in ended)}/6 saw it or the close within 5 s of "
                     "reading fast")
        return ", ".join(parts)

    def other_topics():
        # 14 subscribers of 14 topics that never read, flooded with 2,000 4 KiB messages each
        # (stop-and-wait, so nothing waits for the compute step); then a publisher of an
        # unrelated topic sends 50 messages (the broker was started with --max-pending 2000).
        never = [subscribe(port, f"s{i}", rcvbuf=4096) for i in range(14)]
        flooder = connect(port)
        freader = flooder.makefile("rb")
        filler = "x" * 4090
        count = 14 * 2000
        flood_acks = flood_over = 0
        for i in range(count):
            flooder.sendall(f"PUBLISH|s{i % 14}|{i:06}{filler}\n".encode())
            reply = freader.readline()
            if not reply:
                break
            flood_acks += reply.strip() == b"ACK"
            flood_over += reply.startswith(b"ERR|overloaded")
        time.sleep(0.2)
        held = status(port)
        listener = subscribe(port, "u")
        listener.settimeout(5)
        pub = connect(port)
        preader = pub.makefile("rb")
        acks = over = 0
        for i in range(50):
            pub.sendall(f"PUBLISH|u|{i}\n".encode())
            reply = preader.readline()
            acks += reply.strip() == b"ACK"
            over += reply.startswith(b"ERR|overloaded")
        got = b""
        try:
            while got.count(b"\n") < acks:
                chunk = listener.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        st = status(port)
        hang_up(*never, flooder, listener, pub)
        queued = f", queued_bytes={held['queued_bytes']}" if "queued_bytes" in held else ""
        delivered = got.count(b"\n")
        return (f"flood: {flood_acks}/{count} ACKed, {flood_over} ERR|overloaded; then "
                f"pending={held.get('pending')}{queued}; unrelated topic: {acks}/50 ACKed, "
                f"{over} ERR|overloaded, its subscriber got {delivered}; "
                f"slow_consumers={st.get('slow_consumers')}")

    def subscriptions():
        # Each connection asks for --subs subscriptions to names no other connection uses (by
        # default 1,000 × 65 bytes, which the names alone would fit in the default 64 KiB),
        # then sends 64 KiB of one line without its newline and stays open. The peak RSS is
        # sampled throughout.
        rss = PeakRss(broker.pid)
        rss.start()
        conns, accepted, refused = [], 0, 0
        unfinished = b"PUBLISH|t|" + b"x" * (65536 - 10)
        try:
            for c in range(args.conns):
                s = connect(port)
                conns.append(s)
                names = (f"{c:06}.{i:04}.".ljust(args.name_bytes, "n") for i in range(args.subs))
                s.sendall("".join(f"SUBSCRIBE|{n}\n" for n in names).encode() + b"PING\n")
                reader = s.makefile("rb")
                while (line := reader.readline()) and line != b"PONG\n":
                    refused += line.startswith(b"ERR|too many subscriptions")
                s.sendall(unfinished)
            st = status(port)
            accepted = int(st.get("subscriptions", 0))
            time.sleep(1)
        finally:
            peak = rss.stop()
            hang_up(*conns)
        per_conn = peak / max(1, len(conns))
        return (f"{len(conns)} connections, {accepted} subscriptions accepted, {refused} refused; "
                f"peak RSS {peak} KiB ({peak / 1024:.0f} MiB, {per_conn:.0f} KiB a connection)")

    main_attacks = [
        ("idle", "5,000 idle connections", idle_connections),
        ("long-lines", "200 × 1 MiB without a newline", long_lines),
        ("garbage", "100,000 malformed lines", garbage),
        ("slow", "slow consumer, 30,000 × 1 KiB", slow_consumer),
        ("spoof", "spoofed publisher id (a spy publishes under the id it read)",
         spoofed_publisher_id),
        ("trickle", "6 trickling subscribers (16 KiB / 0.25 s), 60 KB messages",
         trickling_subscribers),
    ]
    try:
        todo = [(name, attack) for short, name, attack in main_attacks if short in only]
        if todo:
            broker = start_broker(args.binary, port)
            for name, attack in todo:
                measure(name, attack)
            stop_broker(broker)
            broker = None
        if "other-topics" in only:
            port = args.port + 1
            broker = start_broker(args.binary, port, ["--max-pending", "2000"])
            measure("14 never-reading subscribers of other topics (`--max-pending 2000`)",
                    other_topics)
            stop_broker(broker)
            broker = None
        if "subscriptions" in only:
            port = args.port + 2
            broker = start_broker(args.binary, port)
            measure(f"{args.conns} connections × {args.subs} subscriptions of {args.name_bytes} bytes + 64 KiB line",
                    subscriptions)
            stop_broker(broker)
            broker = None
    finally:
        if broker is not None:
            stop_broker(broker)
    print("| attack | RSS before | RSS after | still answers | detail |")
    print("|---|---|---|---|---|")
    for name, before, after, alive, detail in results:
        detail = detail.replace("|", "\\|")
        print(f"| {name} | {before // 1024} MiB | {after // 1024} MiB | {'yes' if alive else 'NO'} | {detail} |")
    return 0 if all(r[3] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
