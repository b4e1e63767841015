#!/usr/bin/env python3
"""A TCP forwarder for cutting a link by hand: `forward.py LISTEN_PORT TARGET_HOST:PORT`.

Put one between two programs (give the first `localhost:LISTEN_PORT` instead of the target's
address), then `kill -STOP <its pid>` cuts the link the way a dead cable does: every
connection through it goes silent, new ones hang, and nothing is closed. `kill -CONT` heals it;
Ctrl-C stops it. It listens on 127.0.0.1 only. EXERCISES.md, exercise 7, uses it.
"""

import socket
import sys
import threading


def pump(src, dst):
    """Copies src to dst until either side closes."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main():
    if len(sys.argv) != 3 or ":" not in sys.argv[2]:
        sys.exit("usage: forward.py LISTEN_PORT TARGET_HOST:PORT")
    port = int(sys.argv[1])
    host, target_port = sys.argv[2].rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", port))
    print(f"forwarding 127.0.0.1:{port} to {host}:{target_port}", flush=True)
    try:
        while True:
            client, _ = listener.accept()
            try:
                upstream = socket.create_connection((host, int(target_port)), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
