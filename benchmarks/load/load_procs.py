"""Process helpers shared by the load scripts in this folder (proxy_vs_direct.py,
stream_relay.py, gateway.py): start `modelux mock` / `modelux serve` and learn their port, stop
them, read a process's CPU time and resident memory from /proc, and nginx's relay config.

The scripts run as `python benchmarks/load/<script>.py`, so this folder is on sys.path and
`from load_procs import ...` finds this module.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

API_KEY = "mlx-load-test-key-0001"
LISTEN_RE = re.compile(r"listening on http://[0-9.]+:(\d+)")
TICK = os.sysconf("SC_CLK_TCK")


def start(bin_path: str, args: list[str], log: Path, wrapper: list[str] | None = None,
          timeout_s: float = 15) -> tuple[subprocess.Popen, int]:
    logf = open(log, "wb")
    p = subprocess.Popen([*(wrapper or []), bin_path, *args], stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    buf = b""
    fd = p.stdout.fileno()
    while time.monotonic() < deadline and p.poll() is None:
        if select.select([fd], [], [], 0.05)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            m = LISTEN_RE.search(buf.decode(errors="replace"))
            if m:
                return p, int(m.group(1))
    stop(p)
    raise SystemExit(f"`{bin_path} {' '.join(args)}` did not start: {buf!r} {log.read_text(errors='replace')[-1000:]}")


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def real_pid(p: subprocess.Popen, bin_path: str) -> int:
    """The pid running `bin_path`: `p` itself, or (when a wrapper such as heaptrack started it)
    the descendant of `p` whose executable it is."""
    want = os.path.realpath(bin_path)
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    todo = [p.pid]
    while todo:
        pid = todo.pop()
        try:
            if os.path.realpath(f"/proc/{pid}/exe") == want:
                return pid
        except OSError:
            pass
        todo += children.get(pid, [])
    return p.pid


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)


def thread_cpu(pid: int) -> dict[str, tuple[float, float, int]]:
    """Per thread name (threads of one name summed): user and system CPU seconds and voluntary
    plus involuntary context switches, from /proc/PID/task/*/."""
    out: dict[str, tuple[float, float, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            name = head.split("(", 1)[1]
            fields = rest.split()
            cs = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for ln in f:
                    if ln.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        cs += int(ln.split()[1])
        except OSError:
            continue
        u, s_, c = out.get(name, (0.0, 0.0, 0))
        out[name] = (u + int(fields[11]) / TICK, s_ + int(fields[12]) / TICK, c + cs)
    return out


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) / 1024
    return float("nan")


def start_proxy(bin_path: str, tmp: Path, mock_port: int, threads: int = 1,
                tracing: bool = True, wrapper: list[str] | None = None,
                timeout_ms: int = 10000, route: dict | None = None) -> tuple[subprocess.Popen, int]:
    """`modelux serve` in front of the mock on `mock_port`, configured as in production (API-key
    auth, tracing on unless `tracing` is false): one client key (API_KEY) and the config @bench,
    a single target gpt-4o-mini unless `route` gives another (anthropic, openai and google all
    point at the mock). Its config and log go to `tmp`."""
    mock = f"http://127.0.0.1:{mock_port}"
    cfg = {
        "server": {"host": "127.0.0.1", "port": 0, "threads": threads,
                   "api_keys": [{"key": API_KEY, "name": "load", "project": "load"}]},
        "providers": {"openai": {"base_url": f"{mock}/v1", "api_key": "mock-openai-key"},
                      "anthropic": {"base_url": mock, "api_key": "mock-anthropic-key"},
                      "google": {"base_url": mock, "api_key": "mock-gemini-key"}},
        "routing": {"bench": route or {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": timeout_ms}},
        "budgets": [],
        "tracing": {"path": str(tmp / "traces.db")} if tracing else {"enabled": False},
    }
    (tmp / "config.json").write_text(json.dumps(cfg))
    return start(bin_path, ["serve", "--config", str(tmp / "config.json"), "--port", "0"], tmp / "proxy.log",
                 wrapper=wrapper, timeout_s=60 if wrapper else 15)


def nginx_relay_conf(d: Path, port: int, upstream: str, connections: int = 8192, buffering: bool = True) -> str:
    """nginx (Debian) as a plain reverse proxy on 127.0.0.1:`port` in front of `upstream`
    ("host:port"): one worker, keep-alive to the upstream, files under `d`. `buffering=False`
    passes each upstream read to the client at once (how a relay of SSE is configured). What
    one proxy hop costs, for gateway.py's nginx-relay row and stream_relay.py --nginx."""
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {connections};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  tcp_nodelay on;
  upstream up {{ server {upstream}; keepalive 1024; keepalive_requests 1000000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=8192;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering {'on' if buffering else 'off'};
      proxy_read_timeout 300s;
    }}
  }}
}}
"""

