"""`python -m api serve --workers N` spreads new connections over its workers.

A proxy opening its pool, or many phones coming back online at once, open connections in a
burst; with one shared listening socket the first worker to wake accepts them all.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from tests.resilience.served import free_port, serve

LISTEN, ESTABLISHED = "0A", "01"


def _sockets(port: int) -> dict[int, str]:
    """Inode -> TCP state of the sockets whose local port is ``port``."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found[int(fields[9])] = fields[3]
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == pid:
                children.append(int(entry))
    return children


def _held(pids: list[int], port: int, state: str) -> dict[int, int]:
    """How many sockets on ``port`` in ``state`` each process holds."""
    sockets = _sockets(port)
    return {
        pid: sum(1 for inode in _socket_inodes(pid) if sockets.get(inode) == state) for pid in pids
    }


def test_a_burst_of_new_connections_is_spread_over_the_workers(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "api", "serve", "--port", str(port), "--workers", "2"]
    with serve(argv, tmp_path / "out.log", DATABASE_URL=database_url) as served:
        deadline = time.monotonic() + 60
        while True:  # both workers serving: each listens
            listening = _held(_children(served.process.pid), port, LISTEN)
            if sum(1 for n in listening.values() if n) == 2:
                break
            assert time.monotonic() < deadline, f"{listening}: {served.output()}"
            time.sleep(0.2)
        workers = [pid for pid, n in listening.items() if n]

        burst = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(64)]
        try:
            for conn in burst:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for conn in burst:
                assert conn.recv(65536).startswith(b"HTTP/1.1 200 "), "not answered"
            held = _held(workers, port, ESTABLISHED)
        finally:
            for conn in burst:
                conn.close()
    assert sum(held.values()) == 64, held
    # Each socket of the group has an even chance; fewer than 16 of 64 is a 1-in-30,000 event.
    assert min(held.values()) >= 16, held
