#!/usr/bin/env python3
"""Per-thread view of modelux-min at `threads: N` (issue 13, scaling): how the load splits over
the io threads and whether requests cause cross-thread wake-ups.

Reuses gateway.py's nginx upstream, modelux-min config and wrk driver. For each --threads value
(rounds interleaved) it starts `modelux serve` pinned to --gateway-cpu, warms up, then drives
c=--concurrency for --duration seconds and reports, per request:
  - CPU (utime+stime from /proc, and the two apart) of the process and of each io thread (modelux-ioN);
  - voluntary and involuntary context switches of each io thread (/proc/PID/task/TID/status);
  - with --perf: futex, sendmsg and recvmsg+recvfrom system calls of the whole process
    (`perf stat -e syscalls:sys_enter_*`, which needs tracefs and root).

  python3 benchmarks/load/threads_probe.py --threads 1,2 --gateway-cpu 1 --rounds 2 --perf
  python3 benchmarks/load/threads_probe.py --bin A --bin B ...   # A/B of two builds, interleaved
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as gw  # noqa: E402


def tasks(pid: int) -> dict[str, dict]:
    """{tid: {name, cpu seconds, voluntary, involuntary}} of one process's threads."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (t / "stat").read_text()
            f = stat[stat.rindex(")") + 2:].split()
            status = dict(line.split(":", 1) for line in (t / "status").read_text().splitlines() if ":" in line)
            out[t.name] = {"name": stat[stat.index("(") + 1:stat.rindex(")")],
                           "cpu": (int(f[11]) + int(f[12])) / gw.CLK_TCK,
                           "user": int(f[11]) / gw.CLK_TCK, "sys": int(f[12]) / gw.CLK_TCK,
                           "vol": int(status["voluntary_ctxt_switches"]),
                           "invol": int(status["nonvoluntary_ctxt_switches"])}
        except (FileNotFoundError, ProcessLookupError, ValueError, KeyError):
            pass
    return out


def run_point(a, ctx, binary: str, threads: int) -> dict:
    a.bin, a.modelux_threads = binary, threads
    g = gw.start_modelux(ctx, False)
    try:
        g.rows = [r for r in g.rows if not r.stream]
        gw.wait_ready(g, 60)
        row = g.rows[0]
        gw.wrk(a, row, a.concurrency, 1, ctx.tmp)  # warm-up: pools on every thread
        t0 = tasks(g.proc.pid)
        perf = None
        if a.perf:
            events = "syscalls:sys_enter_futex,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmsg,syscalls:sys_enter_recvfrom"
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(g.proc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.2)
        res = gw.wrk(a, row, a.concurrency, a.duration, ctx.tmp)
        t1 = tasks(g.proc.pid)
        n = max(1, res["requests"])
        out = {"bin": binary, "threads": threads, "rps": res["rps"], "requests": res["requests"],
               "cpu_us_per_req": sum(t1[k]["cpu"] - t0.get(k, {"cpu": 0})["cpu"] for k in t1) * 1e6 / n,
               "user_us_per_req": sum(t1[k]["user"] - t0.get(k, {"user": 0})["user"] for k in t1) * 1e6 / n,
               "sys_us_per_req": sum(t1[k]["sys"] - t0.get(k, {"sys": 0})["sys"] for k in t1) * 1e6 / n, "io": {}}
        delta = {}
        for tid, t in t1.items():
            b = t0.get(tid, {"cpu": 0, "vol": 0, "invol": 0})
            delta[tid] = {"name": t["name"], "cpu_us_per_req": round((t["cpu"] - b["cpu"]) * 1e6 / n, 1),
                          "vol_per_req": round((t["vol"] - b["vol"]) / n, 4),
                          "invol_per_req": round((t["invol"] - b["invol"]) / n, 4)}
        # The io threads are named modelux-ioN; a thread they start inherits the name (Asio's
        # resolver), so the io thread is the lowest id of its name. A build without the names:
        # the `threads` busiest threads other than the trace writer.
        named = {}
        for tid in sorted(delta, key=int, reverse=True):
            if delta[tid]["name"].startswith("modelux-io"):
                named[delta[tid]["name"]] = delta[tid]
        if not named:
            busiest = sorted((d for d in delta.values() if d["name"] != "mlx-trace"), key=lambda d: -d["cpu_us_per_req"])
            named = {f"io{i}": d for i, d in enumerate(busiest[:threads])}
        out["io"] = {k: {kk: vv for kk, vv in v.items() if kk != "name"} for k, v in sorted(named.items())}
        total = sum(v["cpu_us_per_req"] for v in out["io"].values()) or 1
        for v in out["io"].values():
            v["share"] = round(v["cpu_us_per_req"] / total, 3)
        if perf:
            perf.send_signal(2)
            err = perf.communicate(timeout=10)[1]
            counts = {}
            for line in err.splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[2].startswith("syscalls:"):
                    counts[parts[2].split(":")[1].replace("sys_enter_", "")] = float(parts[0]) if parts[0][0].isdigit() else None
            # Per request, counted over perf's window: two sendmsg per proxied request (the upstream
            # request and the answer) give the request count in that same window.
            sends = counts.get("sendmsg") or 0
            reqs = sends / 2 or 1
            out["per_req_syscalls"] = {k: round(v / reqs, 4) for k, v in counts.items() if v is not None}
        return out
    finally:
        g.proc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", help="modelux binary (repeat for an A/B); default build/examples/modelux")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--upstream-cpu", default="0")
    ap.add_argument("--gateway-cpu", default="1")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    bins = a.bin or [str(gw.REPO / "build" / "examples" / "modelux")]
    a.upstream_cpu = None if a.upstream_cpu in ("", "-1") else a.upstream_cpu
    a.gateway_cpu = None if a.gateway_cpu in ("", "-1") else a.gateway_cpu
    tmp = Path(tempfile.mkdtemp(prefix="modelux-threads-probe-"))
    port = gw.free_port()
    (tmp / "nginx-body").mkdir()
    (tmp / "nginx.conf").write_text(gw.nginx_conf(tmp, port))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx = gw.Proc("nginx", gw.pinned(a.upstream_cpu, [nginx_bin, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                                                        "-c", str(tmp / "nginx.conf")]), tmp / "nginx.log")
    ctx = gw.Ctx(a, tmp, f"http://127.0.0.1:{port}")
    results = []
    try:
        time.sleep(0.3)
        for rnd in range(a.rounds):
            for binary in bins:
                for t in [int(x) for x in a.threads.split(",")]:
                    r = run_point(a, ctx, binary, t)
                    r["round"] = rnd + 1
                    results.append(r)
                    print(f"round {rnd + 1} {Path(binary).name} threads {t}: {r['rps']:.0f} req/s, "
                          f"{r['cpu_us_per_req']:.1f} us CPU/req (user {r['user_us_per_req']:.1f}, system "
                          f"{r['sys_us_per_req']:.1f}); io threads "
                          + json.dumps(r["io"]) + (f"; syscalls/req {json.dumps(r['per_req_syscalls'])}" if "per_req_syscalls" in r else "")
                          + f"; load {gw.loadavg()}", flush=True)
    finally:
        nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
