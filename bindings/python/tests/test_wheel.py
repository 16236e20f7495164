"""The installed wheel. scripts/test.sh builds the manylinux wheel (scripts/build-wheel.sh:
`pip wheel .` + `auditwheel repair`), installs it into a fresh venv and runs these tests there
with MODELUX_WHEEL set to the wheel's path. They check that it is that wheel which is imported
(not the source tree), that it carries its own copies of every non-system library, and that it
runs with the build machine's copies of those libraries out of reach."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import threading
import zipfile
from importlib.metadata import distribution
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import modelux
from modelux import _core

from conftest import REPO, modelux_bin, router_config

WHEEL = os.environ.get("MODELUX_WHEEL", "")
pytestmark = pytest.mark.skipif(
    not WHEEL, reason="runs against the installed wheel: scripts/test.sh sets MODELUX_WHEEL")

# What a manylinux wheel may take from the system (auditwheel's manylinux policy, the subset a
# C++ extension can need); everything else must come from the wheel's modelux.libs/.
SYSTEM_LIBS = {
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libmvec.so.1",
    "libdl.so.2", "librt.so.1", "libpthread.so.0", "libresolv.so.2", "libutil.so.1",
    "libstdc++.so.6", "libgcc_s.so.1", "libatomic.so.1", "libz.so.1",
}
# The libraries the build machine has as Debian packages and the wheel must bring itself.
BUNDLED = ("libssl", "libcrypto", "libsqlite3", "libhiredis", "libfmt", "libprometheus")


def extension() -> Path:
    return Path(_core.__file__).resolve()


def test_modelux_is_imported_from_the_installed_wheel_not_the_source_tree() -> None:
    here = Path(modelux.__file__).resolve()
    print(f"modelux.__file__ = {here}")
    assert REPO / "bindings" not in here.parents, f"imported from the source tree: {here}"
    assert here.parent == extension().parent
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert site in here.parents, f"{here} is not under this interpreter's site-packages {site}"
    assert sys.prefix != sys.base_prefix, "not in a venv"
    assert Path(sys.prefix).resolve() != (REPO / ".venv").resolve(), "the dev venv, not a fresh one"


def test_the_installed_files_are_the_repaired_wheels() -> None:
    with zipfile.ZipFile(WHEEL) as z:
        in_wheel = {n for n in z.namelist() if not n.endswith("/")}
        tags = z.read(f"modelux-{modelux.__version__}.dist-info/WHEEL").decode()
    dist = distribution("modelux")
    installed = {str(f) for f in dist.files or [] if "__pycache__" not in str(f) and not str(f).endswith(
        ("INSTALLER", "REQUESTED", "direct_url.json"))}
    assert in_wheel == installed
    assert re.search(r"^Tag: cp\d+-cp\d+-manylinux_\d+_\d+_x86_64$", tags, re.M), tags
    libs = sorted(n for n in in_wheel if n.startswith("modelux.libs/"))
    for name in ("libssl", "libcrypto", "libsqlite3", "libhiredis", "libfmt"):
        assert any(Path(n).name.startswith(name + "-") for n in libs), f"{name} not bundled: {libs}"


def test_the_extension_links_only_system_libraries_and_its_own_copies() -> None:
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd")
    out = subprocess.run([ldd, str(extension())], capture_output=True, text=True, check=True).stdout
    print(out)
    libs_dir = extension().parent.parent / "modelux.libs"
    seen = []
    for line in out.splitlines():
        line = line.strip()
        assert "not found" not in line, line
        name = line.split()[0]
        target = line.split("=>")[1].split("(")[0].strip() if "=>" in line else ""
        if Path(name).name in SYSTEM_LIBS:
            continue
        assert target and Path(target).resolve().parent == libs_dir.resolve(), f"from outside the wheel: {line}"
        seen.append(Path(name).name)
    assert any(n.startswith("libssl-") for n in seen) and any(n.startswith("libsqlite3-") for n in seen), seen


# Runs in the child: a request through the mock with tracing into SQLite (OpenSSL's context, the
# HTTP client and the trace store all load), then the shared objects this process mapped.
_CHILD = r"""
import json, sys
import modelux
cfg = json.loads(sys.argv[1])
r = modelux.Router(cfg, tracing=True)
try:
    answer = r.chat("@production", [{"role": "user", "content": "hi"}], project="wheel")
finally:
    r.close()
maps = sorted({line.split()[-1] for line in open("/proc/self/maps") if ".so" in line.split()[-1]})
print(json.dumps({"file": modelux.__file__, "version": modelux.__version__, "text": answer.text,
                  "served": answer.served_model, "maps": maps}))
"""


def _system_copies() -> List[str]:
    """The build machine's own files of the bundled libraries (Debian's /usr/lib/<triplet>)."""
    found = []
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            p = os.path.join(d, n)
            if n.startswith(BUNDLED) and ".so" in n and os.path.isfile(p) and not os.path.islink(p):
                found.append(p)
    return found


def _plain_pythons() -> List[str]:
    """This interpreter, and the distribution's own CPython when it is another build of the
    same version (the wheel's cp3X tag): Debian's /usr/bin/python3 next to a pyenv one."""
    found = [sys.executable]
    me = os.path.realpath(sys.executable)
    for other in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.access(other, os.X_OK) or os.path.realpath(other) == me:
            continue
        ver = subprocess.run([other, "-I", "-S", "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
        if ver == str(sys.version_info[:2]) and os.path.realpath(other) not in map(os.path.realpath, found):
            found.append(other)
    return found


def _run_hidden(child_code: str, arg: str, mounts: List[str], python: str = sys.executable) -> Dict[str, Any]:
    """Runs `child_code` on a plain interpreter (-I -S: no site-packages, no user site, no
    environment), given only the directory holding modelux, in a private mount namespace
    after `mounts` (shell commands); returns the JSON its last line prints."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here: {probe.stderr.decode().strip()}")
    site = str(extension().parent.parent)
    child = f"import sys; sys.path.insert(0, {site!r}); exec(compile({child_code!r}, 'child', 'exec'))"
    script = " && ".join(mounts + ['exec "$0" -I -S -c "$1" "$2"'])
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, python, child, arg],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    out: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    return out


@pytest.mark.parametrize("python", _plain_pythons(), ids=lambda p: "venv" if p == sys.executable else p)
def test_it_runs_on_a_plain_python_with_the_systems_copies_hidden(mock, tmp_path, python) -> None:
    """The machine's libssl, libcrypto, libsqlite3, libhiredis, libfmt and prometheus-cpp files
    read as empty: what a machine without those Debian packages looks like to the loader. On
    this venv's interpreter and on the distribution's own CPython of the same version."""
    hidden = _system_copies()
    assert any("libssl" in p for p in hidden), "expected the build machine to have libssl"
    cfg = router_config(mock.url)
    cfg["tracing"] = {"path": str(tmp_path / "traces.db")}
    out = _run_hidden(_CHILD, json.dumps(cfg), [f"mount --bind /dev/null '{p}'" for p in hidden], python)
    assert out["file"] == modelux.__file__
    assert out["version"] == modelux.__version__
    assert out["served"] == "claude-haiku-4-5" and out["text"]
    assert (tmp_path / "traces.db").stat().st_size > 0
    ours = [m for m in out["maps"] if Path(m).name.startswith(BUNDLED)]
    assert any("libssl-" in m for m in ours) and any("libsqlite3-" in m for m in ours), ours
    for m in ours:
        assert Path(m).parent.name == "modelux.libs", f"a system copy was loaded: {m}"


_COMPLETION = {
    "id": "chatcmpl-tls", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over TLS"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


@pytest.fixture()
def tls_provider(tmp_path) -> Iterator[Tuple[str, str]]:
    """An HTTPS OpenAI-compatible provider on 127.0.0.1 with a certificate from a throwaway
    CA; yields (base_url, CA PEM path)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("content-length", "0")))
            body = json.dumps(_COMPLETION).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1", str(ca_pem)
    finally:
        server.shutdown()
        server.server_close()


_TLS_CHILD = r"""
import json, sys
import modelux
r = modelux.Router(json.loads(sys.argv[1]), tracing=False)
try:
    answer = r.chat("@fast", [{"role": "user", "content": "hi"}])
    print(json.dumps({"text": answer.text}))
except modelux.ModeluxError as e:
    print(json.dumps({"error": str(e)}))
finally:
    r.close()
"""


def test_https_verifies_with_the_systems_ca_bundle_where_openssls_defaults_are_missing(tls_provider) -> None:
    """The bundled OpenSSL is Debian's, which looks for CAs in /usr/lib/ssl. Here /usr/lib/ssl and
    /etc/ssl are empty but for openSUSE's bundle path (/etc/ssl/ca-bundle.pem), which holds the
    provider's CA: the request verifies. With that CA nowhere, it is refused."""
    url, ca_pem = tls_provider
    cfg = router_config(None)
    cfg["providers"]["openai"]["base_url"] = url
    empty = ["mount -t tmpfs none /usr/lib/ssl", "mount -t tmpfs none /etc/ssl"]  # in the namespace only
    like_opensuse = empty + [f"cp '{ca_pem}' /etc/ssl/ca-bundle.pem"]
    out = _run_hidden(_TLS_CHILD, json.dumps(cfg), like_opensuse)
    assert out == {"text": "over TLS"}
    no_ca = _run_hidden(_TLS_CHILD, json.dumps(cfg), empty)
    assert "error" in no_ca and "certificate" in no_ca["error"].lower(), no_ca
