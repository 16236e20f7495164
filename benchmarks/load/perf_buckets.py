#!/usr/bin/env python3
"""Where modelux's CPU goes: buckets a `perf record --call-graph dwarf` profile by what the code does.

  python3 benchmarks/load/perf_buckets.py PERF_DATA [--top 25] [--thread-names]

Reads `perf script` (call chains, leaf first) and prints, as % of all samples:
  - by thread: router io thread, server io thread, trace writer... (guessed from the stack root);
  - what executes: the leaf frame's bucket (allocation, memcpy, JSON, Beast, Asio, SQLite, and
    kernel time split by the syscall it serves);
  - on behalf of which step: the innermost user frame that names a step of a request (parse the
    request JSON, encode/decode the provider call, dump the response, routing, trace, HTTP
    read/write, Asio runtime); kernel time is charged to the step that made the syscall;
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

# "On behalf of which step": the innermost frame (from the leaf up, kernel frames skipped) that
# matches one of these decides; JSON, Asio and Beast buffer frames are looked through. Asio
# coroutines resume from completion handlers, so outer frames are whatever completed last: the
# innermost step is the one that is paying.
PURPOSE_RULES = [
    ("ingress: parse the caller's request JSON", r"modelux::parse_chat_request|chat_request_from_json|"
                                                 r"message_from_json"),
    ("upstream: encode the provider request (codec)", r"Codec::encode_(request|body)|HttpRequestSpec"),
    ("upstream: decode the provider response (codec)", r"Codec::decode_(response|error)|StreamDecoder"),
    ("egress: build + dump the response JSON", r"modelux::.*to_json|basic_json.*::dump\b|detail::serializer<"),
    ("trace (build, submit, writer, SQLite)", r"[Tt]racer|TraceStore|trace::|sqlite3"),
    ("budget", r"[Bb]udget|Ledger"),
    ("routing decision (session, strategy, health)", r"RoutingSession|SessionCore|TargetStrategy|modelux::policy|"
                                                     r"HealthRegistry|Strategy::|AttemptRecord"),
    ("upstream HTTP client (transport, pool)", r"HttpTransport|BeastHttpStream|modelux::.*(HttpClient|Connection)"),
    ("HTTP write/serialise (Beast, both sides)", r"beast::http::(detail::)?(write|serializer)|BeastWriter|"
                                                 r"beast::http::basic_fields"),
    ("HTTP read/parse (Beast, both sides)", r"beast::http::(detail::)?(read|basic_parser|parser)"),
    ("router (execute, attempts, relay, completion)", r"modelux::Router::(Impl::|co_|complete|stream)|"
                                                r"modelux::(relay_attempt|run_attempt|Attempt[A-Z]\w*|"
                                                r"[A-Za-z_]*[Rr]elay\w*|Completion|ChatRequest|Message)\b"),
    ("proxy handler (auth, tags, respond)", r"modelux::proxy"),
    ("server session loop", r"modelux::http_server"),
]
# Mechanics, not steps: they are looked through when finding the step (JSON, Asio, Beast buffers),
# and only name the sample when no step frame is on its stack.
FALLBACK_RULES = [
    ("JSON with no step frame above it (parse_json, value copies/destroys)", r"nlohmann|modelux::parse_json"),
    ("Asio runtime only (scheduler, strands, coroutine resumption)", r"boost::asio|boost::beast"),
]

# Which thread a sample ran on, guessed from the outermost recognisable frame of its stack.
THREAD_RULES = [
    ("io thread (the Router's io_context)", r"Router::create"),
    ("server io thread", r"http_server::Server|Server::start"),
    ("trace writer", r"Tracer|TraceStore|trace::"),
    ("budget persistence/sync", r"[Bb]udget|SqliteStore|RedisSync"),
    ("main", r"\bmain\b"),
]

SYSCALL_RE = re.compile(r"\b(?:__x64_sys_|__sys_|ksys_|__do_sys_|do_)(sendmsg|recvmsg|sendto|recvfrom|writev|readv|"
                        r"write|read|epoll_wait|epoll_ctl|futex|connect|accept4?|close|poll|madvise|mmap|munmap|"
                        r"nanosleep|clock_nanosleep|pwrite64|pread64|fsync|fdatasync|openat|sched_yield)\b")


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
    purpose_rules = [(n, re.compile(r)) for n, r in PURPOSE_RULES]
    fallback_rules = [(n, re.compile(r)) for n, r in FALLBACK_RULES]
    thread_rules = [(n, re.compile(r)) for n, r in THREAD_RULES]
    n = 0
    selfb, purpose, threads, syms, cross = (collections.Counter() for _ in range(5))
    for comm, frames in samples(a.perf_data):
        if not frames:
            continue
        n += 1
        leaf = frames[0]
        syms[leaf.split(" (")[0][:140]] += 1
        if "[kernel" in leaf:
            sc = next((m.group(1) for f in frames if (m := SYSCALL_RE.search(f))), None)
            bucket = f"kernel: {sc}" if sc else "kernel: interrupts/softirq/scheduler"
        else:
            bucket = next((name for name, rx in self_rules if rx.search(leaf)), None)
            if bucket is None:
                bucket = "modelux code" if "modelux" in leaf else "other"
        selfb[bucket] += 1
        user = [f for f in frames if "[kernel" not in f]
        step = next((name for f in user for name, rx in purpose_rules if rx.search(f)), None)
        if step is None:
            step = next((name for name, rx in fallback_rules for f in user if rx.search(f)),
                        "kernel only (no user frame)" if not user else "other (truncated stack?)")
        purpose[step] += 1
        cross[(step, bucket)] += 1
        role = next((name for f in reversed(frames) for name, rx in thread_rules if rx.search(f)), comm)
        threads[role] += 1
    if not n:
        print("no samples", file=sys.stderr)
        return 1

    def show(title: str, c: collections.Counter, limit: int | None = None) -> None:
        print(f"\n{title}")
        for k, v in c.most_common(limit):
            print(f"  {100.0 * v / n:6.1f}%  {k}")

    print(f"{n} samples")
    show("by thread (guessed from the stack's outermost frames):", threads)
    show("what the CPU executes (leaf frame; kernel split by the syscall it serves):", selfb)
    show("on behalf of which step (innermost matching user frame; kernel time goes to its caller):", purpose)
    print("\neach step split by what executes (% of all samples):")
    for step, v in purpose.most_common():
        parts = sorted(((c, b) for (st, b), c in cross.items() if st == step), reverse=True)[:5]
        print(f"  {100.0 * v / n:6.1f}%  {step}: " + ", ".join(f"{b} {100.0 * c / n:.1f}" for c, b in parts))
    show(f"top {a.top} self symbols:", syms, a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
