"""Small network stand-ins for the end-to-end tests of documented transport behaviour: a TLS
front for the mock (with a test CA from `trustme`), an HTTP CONNECT proxy that counts tunnels,
a proxy process started with extra environment variables, and a count of the proxy's open
upstream sockets. Each server binds port 0 itself and serves on daemon threads until closed."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from e2e_support import Proxy, ServerProcess


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copies a → b until either side closes, then closes both."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class _Server:
    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        conn.close()

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


class TlsFront(_Server):
    """HTTPS on 127.0.0.1 (reached as https://localhost:PORT) relaying plain bytes to the mock.
    `cert` is a trustme LeafCert; the SNI name of every handshake is kept in `sni`."""

    def __init__(self, cert: Any, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sni: list[str | None] = []
        self.handshakes_failed = 0
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.ctx)

        def on_sni(_sock: Any, name: str | None, _ctx: Any) -> None:
            self.sni.append(name)

        self.ctx.sni_callback = on_sni
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pipe, args=(up, tls), daemon=True).start()
        _pipe(tls, up)


class ConnectProxy(_Server):
    """An HTTP CONNECT proxy: opens the tunnel to the requested host:port and counts it."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            piece = conn.recv(4096)
            if not piece:
                conn.close()
                return
            head += piece
        line = head.split(b"\r\n", 1)[0].decode()
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        host, port = target.rsplit(":", 1)
        self.tunnels.append(target)
        try:
            up = socket.create_connection((host, int(port)))
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        threading.Thread(target=_pipe, args=(up, conn), daemon=True).start()
        _pipe(conn, up)


def start_proxy_with_env(config: dict, tmp: Path, name: str, env: dict[str, str]) -> Proxy:
    """Like e2e_support.start_proxy_process, with extra environment variables for the proxy
    (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE...). Proxy variables the test runner may have set
    are cleared first so the test decides them all."""
    cfg_path = tmp / f"{name}.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    saved = {k: os.environ.pop(k) for k in _DECIDED_BY_TEST if k in os.environ}
    try:
        proc = ServerProcess(["serve", "--config", str(cfg_path), "--port", "0"], tmp / f"{name}.log", env)
    finally:
        os.environ.update(saved)
    return Proxy(proc, config)


_DECIDED_BY_TEST = ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")


def upstream_sockets(pid: int, port: int) -> int:
    """How many ESTABLISHED TCP connections process `pid` holds to 127.0.0.1:`port` (from /proc)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[3] == "01" and cols[9] in inodes:
                n += 1
    return n
