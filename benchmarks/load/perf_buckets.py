#!/usr/bin/env python3
"""Where modelux's CPU goes: buckets a `perf record --call-graph dwarf` profile by what the code does.

  python3 benchmarks/load/perf_buckets.py PERF_DATA [--top 25] [--thread-names]

Reads `perf script` (call chains, leaf first) and prints, as % of all samples:
  - self: the leaf frame's bucket (allocation, memcpy, JSON, HTTP, SQLite, kernel by syscall, ...);
  - inclusive: every bucket found anywhere on the stack (a sample counts once per bucket), which
    answers "how much of the time is spent under JSON decoding", callees included;
  - per thread (comm), so the trace writer and the io thread are told apart;
  - the top self symbols.
The patterns are heuristics on demangled names; "other" is what matched none.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys

# (bucket, regex on "symbol (dso)") — order matters for the self view: the first match wins.
SELF_RULES = [
    ("allocation (malloc/free/new/delete)", r"\b(_int_malloc|_int_free|malloc|free|cfree|realloc|calloc|tcache_|"
                                            r"operator new|operator delete|malloc_consolidate|_int_realloc|"
                                            r"unlink_chunk|sysmalloc|arena_get2)\b"),
    ("memcpy/memset/strlen/memcmp", r"__(memcpy|memmove|memset|strlen|memcmp|memchr|strchr|wmemset|"
                                    r"strcmp|strncmp)[a-z_0-9]*|\bmem(cpy|move|set|cmp|chr)\b"),
    ("SQLite", r"sqlite3|\(.*libsqlite3"),
    ("JSON (nlohmann)", r"nlohmann"),
    ("JSON (other: simdjson/fast_json/scan)", r"simdjson|fast_json|json_scan|JsonScan"),
    ("HTTP parse (Beast)", r"beast::http::(basic_parser|parser|detail::basic_parser_base)|basic_parser"),
    ("HTTP serialise (Beast)", r"beast::http::(serializer|detail::write|basic_fields|header|detail::chunk)|"
                               r"beast::buffers_|buffers_cat|buffers_prefix|buffers_suffix"),
    ("Asio scheduler/reactor", r"asio::detail::(scheduler|epoll_reactor|reactive_socket|executor_op|"
                               r"handler_work|thread_info_base|recycling_allocator|strand)|asio::(io_context|"
                               r"any_io_executor|execution)"),
    ("futex/condvar/atomics (thread hops)", r"pthread_cond|pthread_mutex|__lll_lock|futex|"
                                            r"condition_variable|std::mutex"),
    ("fmt/strings", r"\bfmt::|std::__cxx11::basic_string|std::string|to_chars|from_chars|__to_chars"),
    ("libstdc++ other", r"\(.*libstdc\+\+"),
    ("libc other", r"\(.*libc\.so"),
]

# Buckets counted when the pattern appears anywhere on the stack (inclusive). Not exclusive.
INCLUSIVE_RULES = [
    ("HTTP parse (Beast parser, incl. callees)", r"beast::http::basic_parser|beast::http::parser|basic_parser<"),
    ("HTTP serialise/write (Beast, incl. callees)", r"beast::http::serializer|beast::http::detail::write_|"
                                                    r"beast::http::(async_)?write"),
    ("JSON decode (nlohmann parser, incl. callees)", r"nlohmann.*(parser|lexer|sax|from_json)|"
                                                     r"nlohmann.*::parse\b|\bparse_json\b"),
    ("JSON encode (nlohmann serializer/dump, incl. callees)", r"nlohmann.*(serializer|dump|to_json)"),
    ("JSON tree build/destroy (basic_json ctor/dtor, incl. callees)", r"nlohmann.*basic_json.*(~basic_json|"
                                                                     r"json_value::destroy|basic_json\(|"
                                                                     r"operator=|create<)"),
    ("wire codecs (encode request / decode response)", r"modelux::.*(Codec|codec|encode_request|decode_response|"
                                                       r"openai::|wire::)"),
    ("policy/routing session", r"modelux::.*(policy|Policy|Session|session|Decision)"),
    ("budget", r"modelux::.*(budget|Budget|Ledger|ledger)"),
    ("trace build/submit", r"modelux::.*(Tracer::submit|TraceBuilder|trace::build|make_trace|Trace::|"
                           r"to_trace|record_attempt|DecisionTrace)"),
    ("trace writer (serialise + SQLite)", r"modelux::.*(Tracer|TraceStore|trace_store|writer_loop|"
                                          r"write_batch)|sqlite3"),
    ("allocation (malloc/free, incl. callees)", r"\b(malloc|free|cfree|realloc|_int_malloc|_int_free|"
                                                r"operator new|operator delete)\b"),
    ("kernel: socket send (write/sendmsg/writev)", r"__x64_sys_(write|writev|sendto|sendmsg)\b|"
                                                   r"ksys_write|tcp_sendmsg"),
    ("kernel: socket receive (read/recvmsg)", r"__x64_sys_(read|readv|recvfrom|recvmsg)\b|ksys_read|tcp_recvmsg"),
    ("kernel: epoll", r"__x64_sys_epoll|ep_poll|do_epoll"),
    ("kernel: futex (thread wake/wait)", r"__x64_sys_futex|futex_wait|futex_wake"),
    ("kernel: connect/accept/close", r"__x64_sys_(connect|accept4?|close|shutdown|socket)\b"),
    ("kernel (any)", r"\[kernel\.kallsyms\]|\(\[kernel|__x64_sys_|entry_SYSCALL|do_syscall_64"),
]

FRAME_RE = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
HEAD_RE = re.compile(r"^(\S.*?)\s+(\d+)(?:/(\d+))?\s+")


def samples(perf_data: str):
    """Yields (comm, [frame strings leaf first])."""
    p = subprocess.Popen(["perf", "script", "-i", perf_data, "-F", "comm,tid,ip,sym,dso", "--no-inline"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
    comm, frames = None, []
    for line in p.stdout:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        if comm is None and not line.startswith(("\t", " ")):
            m = HEAD_RE.match(line)
            comm = m.group(1) if m else line.split()[0]
            continue
        m = FRAME_RE.match(line)
        if m:
            frames.append(f"{m.group(2)} ({m.group(3)})")
    if comm is not None:
        yield comm, frames
    p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("perf_data")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    self_rules = [(n, re.compile(r)) for n, r in SELF_RULES]
    incl_rules = [(n, re.compile(r)) for n, r in INCLUSIVE_RULES]
    n = 0
    selfb, inclb, comms, syms = (collections.Counter() for _ in range(4))
    kernel_by_syscall = collections.Counter()
    for comm, frames in samples(a.perf_data):
        if not frames:
            continue
        n += 1
        comms[comm] += 1
        leaf = frames[0]
        syms[leaf.split(" (")[0][:140]] += 1
        if "kernel" in leaf or "[unknown]" in leaf and frames[0].startswith("ffff"):
            sc = next((re.search(r"__x64_sys_(\w+)", f).group(1) for f in frames if "__x64_sys_" in f), "irq/other")
            bucket = f"kernel: {sc}"
            kernel_by_syscall[sc] += 1
        else:
            bucket = next((name for name, rx in self_rules if rx.search(leaf)), None)
            if bucket is None:
                bucket = "modelux code" if "modelux" in leaf else "other"
        selfb[bucket] += 1
        stack = "\n".join(frames)
        for name, rx in incl_rules:
            if rx.search(stack):
                inclb[name] += 1
    if not n:
        print("no samples", file=sys.stderr)
        return 1

    def show(title: str, c: collections.Counter, limit: int | None = None) -> None:
        print(f"\n{title}")
        for k, v in c.most_common(limit):
            print(f"  {100.0 * v / n:6.1f}%  {k}")

    print(f"{n} samples")
    show("by thread (comm):", comms)
    show("self time by bucket (leaf frame):", selfb)
    show("inclusive (anywhere on the stack; buckets overlap):", inclb)
    show(f"top {a.top} self symbols:", syms, a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
