#!/usr/bin/env python3
"""Gateway benchmark: modelux and its peers in front of one zero-delay upstream, side by side.

An nginx (Debian) OpenAI-compatible upstream answers POST /v1/chat/completions with a fixed
chat.completion (with usage) and POST /stream/v1/chat/completions with a fixed SSE stream
(nginx cannot route on the body, so the streaming model points at the /stream base path).
wrk (Debian) drives each target at each concurrency; nginx and wrk are pinned on one core
(--upstream-cpu, default 0) and the gateway under test on another (--gateway-cpu, default 1).

Targets (rows), each measured in the same run as the direct baseline it is compared with:
  direct           wrk -> nginx                                    (baseline for JSON rows)
  nginx-relay      wrk -> nginx as a plain reverse proxy (upstream keep-alive) -> nginx, pinned
                   where the gateways are: the floor one proxy hop costs in this harness
  direct-stream    wrk -> nginx, SSE                               (baseline for stream rows)
  modelux-min      API-key auth, one model, no tracing, no budget
  modelux-full     auth, 3-model fallback chain, budget with SQLite persistence,
                   SQLite tracing of every request
  modelux-stream   modelux-min's config, stream: true
  portkey[-stream]     @portkey-ai/gateway from npm              (--peers)
  litellm[-stream]     LiteLLM proxy from PyPI, no database        (--peers)
  tensorzero[-stream]  TensorZero's embedded HTTP gateway (PyPI)   (--peers)

Peers are installed into benchmarks/.peers (gitignored) the first time --peers is given; without
--peers nothing is downloaded. Everything listens on 127.0.0.1 (Portkey's server binds every
interface and cannot be told otherwise; the benchmark only sends to 127.0.0.1), every run is
bounded by --duration per point and start-up timeouts.

Prints a table (req/s per concurrency, peak, p50/p99 at c=1, added latency vs direct, ratios to
direct, proxy CPU per request from /proc utime+stime) and writes the same data as JSON.

  build/examples/modelux must exist (or --bin).
  python3 benchmarks/load/gateway.py                 # modelux rows, 8 s per point, c=1,16,64,256
  python3 benchmarks/load/gateway.py --quick         # 2 s per point, c=1,64
  python3 benchmarks/load/gateway.py --peers         # plus Portkey, LiteLLM, TensorZero
  python3 benchmarks/load/gateway.py --profile DIR   # perf record modelux-min at c=64 (no table)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from load_procs import nginx_relay_conf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS = REPO / "benchmarks" / ".peers"
API_KEY = "mlx-bench-key-0001"          # modelux's client key
PEER_KEY = "sk-bench-master-0001"       # LiteLLM's master key, Portkey's provider key
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORTKEY_PKG = "@portkey-ai/gateway"
PIP_PEERS = ["litellm[proxy]", "tensorzero"]

# --------------------------------------------------------------------------- upstream bodies

# A real gpt-4o-mini answer's shape (ids and fingerprint made up), with usage.
CHAT_COMPLETION = {
    "id": "chatcmpl-BbEnchZeroDelayUpstream0001", "object": "chat.completion", "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content":
                 "Hello! I am a zero-delay upstream. How can I assist you today?",
                 "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 28, "completion_tokens": 16, "total_tokens": 44,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_b376dfbbd5",
}
STREAM_TOKENS = ["Hello", "!", " I", " am", " a", " zero", "-delay", " upstream", ".", " How", " can", " I",
                 " assist", " you", " today", "?"]


def sse_body() -> str:
    base = {"id": "chatcmpl-BbEnchZeroDelayStream0001", "object": "chat.completion.chunk", "created": 1741569952,
            "model": "gpt-4o-mini-2024-07-18", "service_tier": "default", "system_fingerprint": "fp_b376dfbbd5"}

    def chunk(delta: dict, finish=None, usage=None, choices=True) -> str:
        c = dict(base)
        c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []
        c["usage"] = usage
        return "data: " + json.dumps(c, separators=(",", ":")) + "\n\n"

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    out += [chunk({"content": t}) for t in STREAM_TOKENS]
    out.append(chunk({}, finish="stop"))
    out.append(chunk({}, usage=CHAT_COMPLETION["usage"], choices=False))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def nginx_conf(tmp: Path, port: int) -> str:
    chat = json.dumps(CHAT_COMPLETION, separators=(",", ":"))
    # nginx's `return` text is a single-quoted string with variables: keep it literal.
    assert not any(ch in chat for ch in "'\\$"), "upstream body must not contain ' \\ or $"
    # The SSE body is longer than a config parameter may be (4 KiB): nginx serves it as a file.
    # Its static handler refuses POST (405); error_page turns that into a GET of the same file.
    # The JSON answer has a Content-Length, the stream is sent chunked, as OpenAI does.
    sse = tmp / "www" / "stream" / "v1" / "chat" / "completions"
    sse.parent.mkdir(parents=True, exist_ok=True)
    sse.write_text(sse_body())
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {tmp}/nginx-body;
  client_body_buffer_size 64k;
  client_max_body_size 1m;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  tcp_nodelay on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      add_header x-request-id req_bench_zero_delay always;
      add_header openai-processing-ms 0 always;
      return 200 '{chat}';
    }}
    location = /stream/v1/chat/completions {{
      root {tmp}/www;
      default_type text/event-stream;
      add_header cache-control no-cache always;
      add_header x-request-id req_bench_zero_delay always;
      etag off;
      error_page 405 =200 $uri;
      # OpenAI streams are chunked: the SSI filter drops Content-Length, so nginx chunks too.
      ssi on;
      ssi_types text/event-stream;
      ssi_last_modified off;
    }}
    location / {{
      default_type application/json;
      return 404 '{{"error":{{"message":"not found","type":"invalid_request_error"}}}}';
    }}
  }}
}}
"""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    """argv under `taskset -c CPUS` (a taskset CPU list such as "1" or "2,3"), or as is."""
    return argv if cpus is None else ["taskset", "-c", cpus, *argv]


class Proc:
    """A child process with its output in a log file; stop() ends it and everything it started."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None, stdout_pipe=False,
                 cwd: Path | None = None):
        self.name, self.log = name, log
        self.logf = open(log, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE if stdout_pipe else self.logf, stderr=self.logf,
                                  stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid

    def wait_line(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline, buf, fd = time.monotonic() + timeout, b"", self.p.stdout.fileno()
        while time.monotonic() < deadline and self.p.poll() is None:
            if select.select([fd], [], [], 0.05)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                self.logf.write(chunk)
                m = pattern.search(buf.decode(errors="replace"))
                if m:
                    return m
        self.fail(f"no line matching {pattern.pattern!r} within {timeout:.0f} s; stdout: {buf[-500:]!r}")

    def fail(self, why: str):
        self.stop()
        raise RuntimeError(f"{self.name}: {why}\n--- {self.log} ---\n{self.log.read_text(errors='replace')[-1500:]}")

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)  # its own session: the gateway and its workers only
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.logf.close()


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its live descendants (each process's stat covers all its threads)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK      # utime, stime (fields 14, 15)
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total


def thread_cpu_seconds(pid: int) -> dict:
    """{tid: (thread name, utime+stime)} of one process's threads (the trace writer is "mlx-trace")."""
    out = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                out[task.name] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
    except FileNotFoundError:
        pass
    return out


def rss_kb(pid: int) -> int:
    """VmRSS of the gateway's main process (its workers, if any, are not added)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def http_post(url: str, body: bytes, headers: dict, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode(errors="replace")


# --------------------------------------------------------------------------- targets

MESSAGES = [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello in one short sentence and offer help."}]


def body(model: str, stream: bool) -> bytes:
    b = {"model": model, "messages": MESSAGES, "max_tokens": 64, "temperature": 0.2}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b).encode()


@dataclass
class Row:
    name: str
    url: str
    body: bytes
    headers: dict
    stream: bool
    baseline: str                     # the direct row this one is compared with
    results: dict = field(default_factory=dict)   # concurrency -> result dict
    first_event: dict | None = None               # streams: time to the first SSE event at c=1


@dataclass
class Gateway:
    """A started gateway process and the rows measured against it."""
    name: str
    proc: Proc | None
    rows: list[Row]
    info: dict = field(default_factory=dict)


class Ctx:
    def __init__(self, a, tmp: Path, upstream: str):
        self.a, self.tmp, self.upstream = a, tmp, upstream


def modelux_config(ctx: Ctx, full: bool) -> dict:
    up = ctx.upstream
    cfg = {
        "server": {"host": "127.0.0.1", "port": 0, "threads": ctx.a.modelux_threads,
                   "api_keys": [{"key": API_KEY, "name": "bench", "project": "bench", "org": "bench-org"}]},
        "providers": {
            "openai": {"base_url": f"{up}/v1", "api_key": "sk-upstream-bench"},
            # Same wire format, other base path: nginx answers it with the SSE stream.
            "benchstream": {"family": "openai", "base_url": f"{up}/stream/v1", "api_key": "sk-upstream-bench"},
        },
        "catalog": {"models": [{"id": "bench-stream", "provider": "benchstream", "input": 0.15, "output": 0.6,
                                "tier": 2}]},
        "routing": {"min": {"strategy": "single", "model": "gpt-4o-mini", "timeout_ms": 10000},
                    "stream": {"strategy": "single", "model": "bench-stream", "timeout_ms": 10000}},
        "budgets": [],
        "tracing": {"enabled": False},
    }
    if full:
        cfg["routing"]["full"] = {
            "strategy": "fallback",
            "attempts": [{"model": "gpt-4o-mini", "timeout_ms": 3000}, {"model": "gpt-4.1-mini", "timeout_ms": 3000},
                         {"model": "gpt-4o", "timeout_ms": 5000}],
            "retry_on": ["429", "5xx", "timeout"], "total_budget_ms": 10000}
        cfg["budgets"] = [{"name": "bench-daily", "scope": {"project": "bench"}, "window": "daily",
                           "limit_usd": 1000000000, "alerts": [80, 100]}]
        cfg["budget_backend"] = {"sqlite_path": str(ctx.tmp / "modelux-full-budgets.db")}
        cfg["tracing"] = {"path": str(ctx.tmp / "modelux-full-traces.db")}
    return cfg


LISTEN_RE = re.compile(r"listening on http://[0-9.]+:(\d+)")


def start_modelux(ctx: Ctx, full: bool) -> Gateway:
    name = "modelux-full" if full else "modelux-min"
    path = ctx.tmp / f"{name}.json"
    path.write_text(json.dumps(modelux_config(ctx, full), indent=1))
    proc = Proc(name, pinned(ctx.a.gateway_cpu, [ctx.a.bin, "serve", "--config", str(path), "--port", "0"]),
                ctx.tmp / f"{name}.log", stdout_pipe=True)
    port = int(proc.wait_line(LISTEN_RE, 20).group(1))
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    auth = {"authorization": f"Bearer {API_KEY}"}
    if full:
        rows = [Row("modelux-full", url, body("@full", False), auth, False, "direct")]
    else:
        rows = [Row("modelux-min", url, body("@min", False), auth, False, "direct"),
                Row("modelux-stream", url, body("@stream", True), auth, True, "direct-stream")]
    return Gateway(name, proc, rows, {"port": port, "config": str(path)})


def start_nginx_relay(ctx: Ctx) -> Gateway:
    """nginx as a plain reverse proxy (upstream keep-alive, no buffering of the small answer beyond
    its defaults), pinned where the gateways are: what one proxy hop costs in this harness."""
    port = free_port()
    d = ctx.tmp / "relay"
    (d / "body").mkdir(parents=True, exist_ok=True)
    up = ctx.upstream.removeprefix("http://")
    conf = d / "nginx.conf"
    conf.write_text(nginx_relay_conf(d, port, up))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = Proc("nginx-relay", pinned(ctx.a.gateway_cpu, [nginx_bin, "-p", str(d), "-e", str(d / "nginx-error.log"),
                                                          "-c", str(conf)]), ctx.tmp / "nginx-relay.log")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return Gateway("nginx-relay", proc, [Row("nginx-relay", url, body("gpt-4o-mini", False), {}, False, "direct")],
                   {"port": port})


def start_portkey(ctx: Ctx) -> Gateway:
    script = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        raise RuntimeError(f"Portkey is not installed ({script}); run with --peers")
    port = free_port()
    env = dict(os.environ, NODE_ENV="production")
    proc = Proc("portkey", pinned(ctx.a.gateway_cpu, ["node", str(script), f"--port={port}", "--headless"]),
                ctx.tmp / "portkey.log", env=env)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    h = {"authorization": f"Bearer {PEER_KEY}", "x-portkey-provider": "openai"}
    rows = [Row("portkey", url, body("gpt-4o-mini", False), {**h, "x-portkey-custom-host": f"{ctx.upstream}/v1"},
                False, "direct"),
            Row("portkey-stream", url, body("gpt-4o-mini", True),
                {**h, "x-portkey-custom-host": f"{ctx.upstream}/stream/v1"}, True, "direct-stream")]
    return Gateway("portkey", proc, rows, {"port": port, "version": npm_version()})


def start_litellm(ctx: Ctx) -> Gateway:
    exe = PEERS / "venv" / "bin" / "litellm"
    if not exe.exists():
        raise RuntimeError(f"LiteLLM is not installed ({exe}); run with --peers")
    port = free_port()
    cfg = ctx.tmp / "litellm.yaml"
    # No database: no DATABASE_URL; the master key is checked in memory.
    cfg.write_text(f"""model_list:
  - model_name: bench
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{ctx.upstream}/v1", api_key: sk-upstream-bench}}
  - model_name: bench-stream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{ctx.upstream}/stream/v1", api_key: sk-upstream-bench}}
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: {PEER_KEY}
""")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", NO_DOCS="True", DISABLE_ADMIN_UI="True")
    proc = Proc("litellm", pinned(ctx.a.gateway_cpu, [str(exe), "--config", str(cfg), "--host", "127.0.0.1",
                                                      "--port", str(port), "--num_workers", "1"]),
                ctx.tmp / "litellm.log", env=env, cwd=ctx.tmp)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    h = {"authorization": f"Bearer {PEER_KEY}"}
    rows = [Row("litellm", url, body("bench", False), h, False, "direct"),
            Row("litellm-stream", url, body("bench-stream", True), h, True, "direct-stream")]
    return Gateway("litellm", proc, rows, {"port": port, "version": pip_version("litellm")})


TZ_RUNNER = """
import sys, time, signal, tensorzero
gw = tensorzero._start_http_gateway(config_file=sys.argv[1], clickhouse_url=None, postgres_url=None,
                                    valkey_url=None, async_setup=False)
print("TZ_BASE_URL", gw.base_url, flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT}) if hasattr(signal, "sigwait") else time.sleep(1e9)
"""


def start_tensorzero(ctx: Ctx) -> Gateway:
    py = PEERS / "venv" / "bin" / "python"
    if not (PEERS / "venv" / "bin" / "litellm").exists() or subprocess.run(
            [str(py), "-c", "import tensorzero"], capture_output=True).returncode != 0:
        raise RuntimeError("tensorzero is not installed in benchmarks/.peers/venv; run with --peers")
    cfg = ctx.tmp / "tensorzero.toml"
    cfg.write_text(f"""[gateway]
observability.enabled = false

[models.bench]
routing = ["nginx"]
[models.bench.providers.nginx]
type = "openai"
model_name = "gpt-4o-mini"
api_base = "{ctx.upstream}/v1/"
api_key_location = "none"

[models.bench-stream]
routing = ["nginx"]
[models.bench-stream.providers.nginx]
type = "openai"
model_name = "gpt-4o-mini"
api_base = "{ctx.upstream}/stream/v1/"
api_key_location = "none"
""")
    runner = ctx.tmp / "tz_runner.py"
    runner.write_text(TZ_RUNNER)
    env = dict(os.environ, TENSORZERO_DISABLE_PSEUDONYMOUS_USAGE_ANALYTICS="1", RUST_LOG="error")
    proc = Proc("tensorzero", pinned(ctx.a.gateway_cpu, [str(py), "-u", str(runner), str(cfg)]),
                ctx.tmp / "tensorzero.log", env=env, stdout_pipe=True)
    base = proc.wait_line(re.compile(r"TZ_BASE_URL (\S+)"), 60).group(1).rstrip("/")
    # The embedded gateway's OpenAI-compatible route is {base}/openai/v1/chat/completions.
    root = base.split("/openai")[0]
    url = f"{root}/openai/v1/chat/completions"
    rows = [Row("tensorzero", url, body("tensorzero::model_name::bench", False), {}, False, "direct"),
            Row("tensorzero-stream", url, body("tensorzero::model_name::bench-stream", True), {}, True,
                "direct-stream")]
    return Gateway("tensorzero", proc, rows, {"base_url": base, "version": pip_version("tensorzero")})


def npm_version() -> str:
    try:
        pj = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
        return json.loads(pj.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


def pip_version(pkg: str) -> str:
    r = subprocess.run([str(PEERS / "venv" / "bin" / "python"), "-c",
                        f"import importlib.metadata as m; print(m.version('{pkg}'))"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def install_peers() -> None:
    """Into benchmarks/.peers (gitignored): npm for Portkey, a venv for LiteLLM and TensorZero."""
    PEERS.mkdir(parents=True, exist_ok=True)
    if not (PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway").exists():
        print(f"installing {PORTKEY_PKG} into {PEERS / 'portkey'} ...", flush=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(PEERS / "portkey"), PORTKEY_PKG], check=True)
    if not (PEERS / "venv" / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS / "venv")], check=True)
    py = str(PEERS / "venv" / "bin" / "python")
    if subprocess.run([py, "-c", "import litellm, tensorzero"], capture_output=True).returncode != 0:
        print(f"installing {' '.join(PIP_PEERS)} into {PEERS / 'venv'} ...", flush=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *PIP_PEERS], check=True)


# --------------------------------------------------------------------------- measuring


def wrk(a, row: Row, conc: int, seconds: float, tmp: Path) -> dict:
    bf = tmp / f"body-{abs(hash(row.body))}.json"
    bf.write_bytes(row.body)
    env = dict(os.environ, BENCH_BODY_FILE=str(bf),
               BENCH_HEADERS="\n".join(f"{k}: {v}" for k, v in row.headers.items()))
    argv = pinned(a.upstream_cpu, ["wrk", "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                                   "-s", str(HERE / "post.lua"), row.url])
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH_JSON (.*)$", r.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no summary for {row.name} c={conc}: {r.stdout[-800:]} {r.stderr[-800:]}")
    out = json.loads(m.group(1))
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    out["errors"] = sum(out[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return out


def check_row(row: Row) -> None:
    """One request through the row before load: a 200 with a complete answer, else the row is broken."""
    status, data = http_post(row.url, row.body, row.headers, timeout=30)
    text = data.decode(errors="replace")
    ok = status == 200 and (("[DONE]" in text and "zero" in text) if row.stream else '"chat.completion"' in text)
    if not ok:
        raise RuntimeError(f"{row.name}: probe got {status}: {text[:400]}")


def wait_ready(gw: Gateway, timeout: float) -> None:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if gw.proc and not gw.proc.alive():
            gw.proc.fail("exited during start-up")
        try:
            check_row(gw.rows[0])
            return
        except (OSError, RuntimeError) as e:   # connection refused while starting, or a 5xx
            last = str(e)
            time.sleep(0.5)
    if gw.proc:
        gw.proc.fail(f"not ready within {timeout:.0f} s: {last[:300]}")
    raise RuntimeError(f"{gw.name} not ready: {last}")


def measure(a, gw: Gateway, tmp: Path, skipped: dict) -> None:
    for row in gw.rows:
        try:
            check_row(row)
        except (OSError, RuntimeError) as e:   # a row the gateway cannot serve: say why, go on
            skipped[row.name] = str(e).splitlines()[0]
            print(f"  {row.name}: SKIPPED: {skipped[row.name]}", flush=True)
            continue
        wrk(a, row, min(16, max(a.conc)), a.warmup, tmp)         # warm-up: pools, caches, JITs
        if row.stream and a.first_event:
            try:
                row.first_event = first_event_latency(row, a.first_event)
                print(f"  {row.name:<18} first event at c=1: p50 {row.first_event['p50_us']} us, "
                      f"p99 {row.first_event['p99_us']} us ({a.first_event} requests)", flush=True)
            except (OSError, RuntimeError) as e:
                print(f"  {row.name}: first-event probe failed: {e}", flush=True)
        for c in a.conc:
            cpu0 = tree_cpu_seconds(gw.proc.pid) if gw.proc else None
            threads0 = thread_cpu_seconds(gw.proc.pid) if gw.proc else {}
            res = wrk(a, row, c, a.duration, tmp)
            if gw.proc:
                res["cpu_s"] = tree_cpu_seconds(gw.proc.pid) - cpu0
                res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / max(1, res["requests"])
                # Per thread (busiest first): shows the trace writer's share next to the io thread.
                res["threads"] = sorted(([name, round((cpu - threads0.get(tid, (name, 0.0))[1]) * 1e6 / max(1, res["requests"]), 1)]
                                         for tid, (name, cpu) in thread_cpu_seconds(gw.proc.pid).items()),
                                        key=lambda t: -t[1])[:4]
                res["rss_kb"] = rss_kb(gw.proc.pid)
                if not gw.proc.alive():
                    gw.proc.fail(f"died during {row.name} c={c}")
            row.results[c] = res
            print(f"  {row.name:<18} c={c:<4} {res['rps']:>9.0f} req/s  p50 {res['p50_us']:>7} us  "
                  f"p99 {res['p99_us']:>7} us" + (f"  cpu {res['cpu_us_per_req']:.0f} us/req  rss "
                                                  f"{res['rss_kb'] / 1024:.0f} MB" if gw.proc else "")
                  + (f"  ERRORS {res['errors']}" if res["errors"] else ""), flush=True)
            if gw.proc and res.get("threads"):
                print(f"  {'':<18} cpu by thread: " + ", ".join(f"{n} {us:.0f} us/req" for n, us in res["threads"]), flush=True)


def first_event_latency(row: Row, n: int) -> dict:
    """Streams only: time from sending the request to the first SSE event (`data:`) arriving, over one
    keep-alive connection, n requests in a row. wrk times whole responses, so this is the time to first
    token that the streaming target is about. The client is Python: compare with direct-stream's value."""
    from urllib.parse import urlsplit
    u = urlsplit(row.url)
    head = (f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(row.body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in row.headers.items())
            + "\r\n").encode() + row.body
    lat = []
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(n):
            t0 = time.perf_counter()
            sock.sendall(head)
            first = None
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"{row.name}: connection closed mid-stream")
                buf += chunk
                if first is None and b"data:" in buf:
                    first = time.perf_counter() - t0
                # The end of one chunked SSE response: the zero chunk after [DONE] (or the body's end).
                if b"[DONE]" in buf and (buf.endswith(b"0\r\n\r\n") or b"content-length" in buf.lower()):
                    break
            lat.append(first)
            buf = b""
    lat.sort()
    return {"n": n, "p50_us": round(lat[len(lat) // 2] * 1e6), "p99_us": round(lat[int(len(lat) * 0.99) - 1] * 1e6)}


def modelux_metrics(gw: Gateway) -> dict:
    try:
        text = http_get(f"http://127.0.0.1:{gw.info['port']}/metrics")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(modelux_(?:traces|upstream_connections)_[a-z_]+) ([0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


# --------------------------------------------------------------------------- report


def fmt_rps(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def report(rows: list[Row], conc: list[int]) -> str:
    by = {r.name: r for r in rows}
    lines = []
    head = ["target"] + [f"c={c}" for c in conc] + ["peak", "xdirect", "p50@1", "p99@1", "+p50@1", "+p99@1",
                                                      "cpu/req"]
    lines.append(" | ".join(head))
    lines.append("|".join("---" for _ in head))
    for r in rows:
        if not r.results:
            continue
        base = by.get(r.baseline)
        rps = [r.results[c]["rps"] if c in r.results else None for c in conc]
        peak_c = max(r.results, key=lambda c: r.results[c]["rps"])
        peak = r.results[peak_c]["rps"]
        cells = [r.name] + [fmt_rps(x) for x in rps] + [fmt_rps(peak)]
        if base and base.results and base is not r:
            bpeak = max(x["rps"] for x in base.results.values())
            cells.append(f"{peak / bpeak:.3f}")
        else:
            cells.append("1")
        c1 = r.results.get(min(conc))
        b1 = base.results.get(min(conc)) if base else None
        cells += [f"{c1['p50_us']} us", f"{c1['p99_us']} us"] if c1 else ["-", "-"]
        if c1 and b1 and base is not r:
            cells += [f"+{c1['p50_us'] - b1['p50_us']} us", f"+{c1['p99_us'] - b1['p99_us']} us"]
        else:
            cells += ["-", "-"]
        cpu = r.results[peak_c].get("cpu_us_per_req")
        cells.append(f"{cpu:.0f} us" if cpu is not None else "-")
        errs = sum(x["errors"] for x in r.results.values())
        if errs:
            cells[0] += f" ({errs} errors)"
        lines.append(" | ".join(cells))
    table = "\n".join("| " + ln + " |" for ln in lines)
    fe = [r for r in rows if r.first_event]
    if fe:
        base = by.get("direct-stream")
        b = base.first_event["p50_us"] if base and base.first_event else None
        table += "\n\ntime to the first SSE event at c=1 (Python client, keep-alive): " + ", ".join(
            f"{r.name} p50 {r.first_event['p50_us']} us / p99 {r.first_event['p99_us']} us"
            + (f" (+{r.first_event['p50_us'] - b} us p50)" if b is not None and r is not base else "") for r in fe)
    return table


# --------------------------------------------------------------------------- main


def tool_version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("MODELUX_BIN", str(REPO / "build" / "examples" / "modelux")))
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per point (default 8)")
    ap.add_argument("--concurrency", default="1,16,64,256", help="comma-separated (default 1,16,64,256)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per row (default 1; wrk takes whole seconds)")
    ap.add_argument("--quick", action="store_true", help="2 s per point at c=1,64 (a smoke run)")
    ap.add_argument("--peers", action="store_true",
                    help="also run Portkey, LiteLLM and TensorZero (installs them into benchmarks/.peers once)")
    ap.add_argument("--only", default="", help="comma-separated gateways: nginx-relay,modelux-min,modelux-full,portkey,litellm,"
                                               "tensorzero (default: all selected; direct always runs)")
    ap.add_argument("--first-event", type=int, default=300,
                    help="streams: requests for the time-to-first-event probe at c=1 (0: skip; default 300)")
    ap.add_argument("--no-stream", action="store_true", help="skip the streaming rows")
    ap.add_argument("--upstream-cpu", default="0", help="taskset CPU list for nginx and wrk (default 0; -1: no pinning)")
    ap.add_argument("--gateway-cpu", default="1",
                    help="taskset CPU list for the gateway under test (default 1; -1: no pinning)")
    ap.add_argument("--modelux-threads", type=int, default=1,
                    help="server.threads for modelux (default 1; e.g. 2 with --gateway-cpu 2,3 for the scaling target)")
    ap.add_argument("--json", default="", help="write the results here (default benchmarks/.results/gateway-<time>.json)")
    ap.add_argument("--profile", default="", metavar="DIR",
                    help="instead of the table: perf record --profile-target (modelux-min) at --profile-concurrency "
                         "(64) for --duration s into DIR, then count its syscalls per request")
    ap.add_argument("--profile-target", default="modelux-min", choices=["modelux-min", "modelux-full", "modelux-stream"])
    ap.add_argument("--profile-concurrency", type=int, default=64)
    ap.add_argument("--perf-freq", type=int, default=499, help="perf sampling frequency for --profile (Hz)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, SQLite files)")
    a = ap.parse_args()
    if a.quick:
        a.duration, a.warmup = 2.0, 1.0
        a.first_event = min(a.first_event, 100)
        if a.concurrency == ap.get_default("concurrency"):
            a.concurrency = "1,64"
    a.conc = [int(c) for c in a.concurrency.split(",")]
    ncpu = os.cpu_count() or 1
    a.upstream_cpu = None if a.upstream_cpu in ("", "-1") or ncpu < 2 else a.upstream_cpu
    a.gateway_cpu = None if a.gateway_cpu in ("", "-1") or ncpu < 2 else a.gateway_cpu
    if a.profile and not shutil.which("perf"):
        raise SystemExit("perf not found: apt-get install linux-perf. Where perf is not permitted, run "
                         "`valgrind --tool=callgrind build/examples/modelux serve --config CFG --port 0` "
                         "under a short wrk run instead (docs/performance.md)")
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} not found: apt-get install nginx-light wrk")
    if not Path(a.bin).exists():
        raise SystemExit(f"{a.bin} not found: build it (ninja -C build modelux_cli) or pass --bin")
    if a.peers:
        install_peers()
    only = set(filter(None, a.only.split(",")))
    want = (lambda n: n in only) if only else (lambda n: True)

    tmp = Path(tempfile.mkdtemp(prefix="modelux-gw-bench-"))
    nginx_port = free_port()
    (tmp / "nginx-body").mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, nginx_port))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    upstream = f"http://127.0.0.1:{nginx_port}"
    ctx = Ctx(a, tmp, upstream)
    started: list[Gateway] = []
    nginx = Proc("nginx", pinned(a.upstream_cpu, [nginx_bin, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                                                  "-c", str(tmp / "nginx.conf")]), tmp / "nginx.log")
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpus": ncpu, "loadavg_start": loadavg(),
            "duration_s": a.duration, "concurrency": a.conc, "upstream_cpu": a.upstream_cpu,
            "gateway_cpu": a.gateway_cpu, "nginx": tool_version([nginx_bin, "-v"]),
            "wrk": tool_version(["wrk", "-v"]), "modelux_bin": a.bin,
            "modelux_commit": subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                             capture_output=True, text=True).stdout.strip()}
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    try:
        direct = Gateway("direct", None, [
            Row("direct", f"{upstream}/v1/chat/completions", body("gpt-4o-mini", False), {}, False, "direct"),
            Row("direct-stream", f"{upstream}/stream/v1/chat/completions", body("gpt-4o-mini", True), {}, True,
                "direct-stream")])
        try:
            wait_ready(direct, 10)
        except RuntimeError as e:
            raise SystemExit(f"nginx did not answer: {e}\n{(tmp / 'nginx-error.log').read_text(errors='replace')[-1000:] if (tmp / 'nginx-error.log').exists() else ''}"
                             f"{(tmp / 'nginx.log').read_text(errors='replace')[-1000:]}")
        if a.no_stream:
            direct.rows = direct.rows[:1]

        if a.profile:
            return profile(a, ctx, Path(a.profile))

        plan = [("direct", lambda: direct), ("nginx-relay", lambda: start_nginx_relay(ctx)),
                ("modelux-min", lambda: start_modelux(ctx, False)),
                ("modelux-full", lambda: start_modelux(ctx, True))]
        if a.peers:
            plan += [("portkey", lambda: start_portkey(ctx)), ("litellm", lambda: start_litellm(ctx)),
                     ("tensorzero", lambda: start_tensorzero(ctx))]
        print(f"upstream nginx on {upstream} (cpu {a.upstream_cpu}), gateways on cpu {a.gateway_cpu}; "
              f"{a.duration:g} s per point at c={','.join(map(str, a.conc))}; load average {meta['loadavg_start']}",
              flush=True)
        for name, make in plan:
            if not want(name) and name != "direct":
                continue
            try:
                gw = make()
            except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
                skipped[name] = str(e).splitlines()[0]
                print(f"  {name}: SKIPPED: {e}", flush=True)
                continue
            started.append(gw)
            try:
                if a.no_stream:
                    gw.rows = [r for r in gw.rows if not r.stream]
                wait_ready(gw, 180)
                measure(a, gw, tmp, skipped)
                if name.startswith("modelux"):
                    time.sleep(0.5)   # let the trace writer catch up before reading its counters
                    gw.info["metrics"] = modelux_metrics(gw)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                skipped[name] = str(e).splitlines()[0]
                print(f"  {name}: FAILED: {e}", flush=True)
            finally:
                rows += [r for r in gw.rows if r.results]
                if gw.proc:
                    gw.info["rss_kb_end"] = rss_kb(gw.proc.pid)
                    gw.proc.stop()
        meta["loadavg_end"] = loadavg()

        print()
        print(f"Gateways, zero-delay nginx upstream, {a.duration:g} s per point, {ncpu} CPUs, nginx+wrk on cpu "
              f"{a.upstream_cpu}, gateway on cpu {a.gateway_cpu}; load average {meta['loadavg_start']} -> "
              f"{meta['loadavg_end']}")
        print(report(rows, a.conc))
        print("xdirect: peak req/s / the direct row's peak (streams: / direct-stream); +p50/+p99: added at c=1 "
              "vs the same baseline; cpu/req: (utime+stime of the gateway's processes) / requests at its peak point.")
        for gw in started:
            mx = gw.info.get("metrics")
            if mx:
                print(f"{gw.name}: upstream connections opened "
                      f"{mx.get('modelux_upstream_connections_opened_total', float('nan')):.0f}, reused "
                      f"{mx.get('modelux_upstream_connections_reused_total', float('nan')):.0f}"
                      + (f"; traces submitted {mx.get('modelux_traces_submitted_total', 0):.0f}, written "
                         f"{mx.get('modelux_traces_written_total', 0):.0f}, dropped "
                         f"{mx.get('modelux_traces_dropped_total', 0):.0f}" if gw.name == "modelux-full" else ""))
        for name, why in skipped.items():
            print(f"skipped {name}: {why}")
        out = Path(a.json) if a.json else REPO / "benchmarks" / ".results" / \
            f"gateway-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "meta": meta, "skipped": skipped,
            "gateways": {g.name: g.info for g in started},
            "rows": {r.name: {"baseline": r.baseline, "stream": r.stream, "first_event": r.first_event,
                              "results": {str(c): v for c, v in r.results.items()}} for r in rows},
            "table": report(rows, a.conc)}, indent=1))
        print(f"JSON: {out}")
        return 1 if any(x["errors"] for r in rows for x in r.results.values()) else 0
    finally:
        for gw in started:
            if gw.proc:
                gw.proc.stop()
        nginx.stop()
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def profile(a, ctx: Ctx, out: Path) -> int:
    """perf record (cpu-clock, DWARF call graphs, every thread) on one modelux row while wrk holds
    --profile-concurrency against it; then perf stat counts its syscalls per request."""
    out.mkdir(parents=True, exist_ok=True)
    gw = start_modelux(ctx, a.profile_target == "modelux-full")
    try:
        wait_ready(gw, 60)
        row = next(r for r in gw.rows if r.name == a.profile_target)
        c = a.profile_concurrency
        wrk(a, row, c, a.warmup, ctx.tmp)
        data = out / "perf.data"
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(a.perf_freq), "--call-graph",
                                 "dwarf,16384", "-p", str(gw.proc.pid), "-o", str(data), "--", "sleep",
                                 f"{a.duration:g}"], stdout=subprocess.DEVNULL, stderr=open(out / "perf.log", "wb"))
        cpu0 = tree_cpu_seconds(gw.proc.pid)
        res = wrk(a, row, c, a.duration, ctx.tmp)
        cpu = tree_cpu_seconds(gw.proc.pid) - cpu0
        perf.wait(timeout=120)
        summary = {"target": row.name, "concurrency": c, "rps": res["rps"], "p50_us": res["p50_us"],
                   "requests": res["requests"], "cpu_us_per_req": cpu * 1e6 / max(1, res["requests"])}
        print(f"{row.name} c={c} under perf: {res['rps']:.0f} req/s, p50 {res['p50_us']} us, "
              f"cpu {summary['cpu_us_per_req']:.0f} us/req; {data}", flush=True)
        # Syscalls per request (tracepoints; skipped where perf may not read them).
        events = ",".join(f"syscalls:sys_enter_{s}" for s in ("sendmsg", "recvmsg", "sendto", "recvfrom", "write",
                                                              "writev", "read", "epoll_wait", "epoll_ctl",
                                                              "futex", "accept4", "connect", "close"))
        stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(gw.proc.pid), "--", "sleep",
                                 f"{min(a.duration, 5):g}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        res2 = wrk(a, row, c, min(a.duration, 5), ctx.tmp)
        err = stat.communicate(timeout=60)[1]
        per_req = {}
        for line in err.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_") and parts[0].strip().isdigit():
                per_req[parts[2].removeprefix("syscalls:sys_enter_")] = int(parts[0]) / max(1, res2["requests"])
        if per_req:
            summary["syscalls_per_request"] = per_req
            print("syscalls per request: " + ", ".join(f"{k} {v:.2f}" for k, v in per_req.items() if v >= 0.005))
        else:
            print(f"perf stat gave no syscall counts: {err.strip()[:300]}")
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"then: python3 {HERE / 'perf_buckets.py'} {data}")
        return 0
    finally:
        gw.proc.stop()


if __name__ == "__main__":
    sys.exit(main())
