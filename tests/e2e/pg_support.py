"""A real PostgreSQL server (Debian `postgresql`) for the fleet tests and the fleet benchmark.

It runs in a temp dir and listens only on a unix socket there (no TCP port to collide on).
PostgreSQL refuses to run as root: as root (CI) it runs as the `postgres` OS user through
runuser, in a dir that user owns. When it cannot start, PostgresServer() raises with the
reason: a test using it fails, it is never skipped silently.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def _bin_dir() -> str:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    dirs = [d for d in dirs if os.path.exists(f"{d}/pg_ctl")]
    if not dirs:
        raise RuntimeError("PostgreSQL not found under /usr/lib/postgresql/*/bin (scripts/setup.sh installs it)")
    return dirs[-1]


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="modelux-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                shutil.chown(self.dir, user="postgres")
            except (LookupError, PermissionError) as e:
                raise RuntimeError(f"running as root, but cannot hand {self.dir} to the 'postgres' user: {e}") from e
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([*self.as_user, f"{self.bin}/initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                   "--no-sync", "-E", "UTF8"], "initdb")
        self.running = False
        self.start()

    def _run(self, cmd: list[str], what: str) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            log = (self.dir / "server.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr[-2000:]} {tail}")
        return r.stdout

    def start(self) -> None:
        if self.running:
            return
        opts = f"-k {self.dir} -c listen_addresses='' -F -c max_connections=100"
        self._run([*self.as_user, f"{self.bin}/pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"),
                   "-w", "-t", "30", "-o", opts, "start"], "pg_ctl start")
        self.running = True

    def stop(self) -> None:
        if not self.running:
            return
        subprocess.run([*self.as_user, f"{self.bin}/pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        self.running = False

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql:///{db}?host={self.dir}&user=postgres"

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Runs SQL as the superuser; returns the unaligned, tuples-only output."""
        r = subprocess.run([f"{self.bin}/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir), "-U",
                            "postgres", "-d", db, "-c", sql], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)
