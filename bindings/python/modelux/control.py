"""Configs and versions from Python: the control store (the SQLite file the proxy's control
plane and ``modelux config ...`` use, docs/control-plane.md), opened in-process — no proxy, no
admin key. Every write is a new immutable version with its entry in the hash-chained audit
log, in one transaction::

    store = modelux.ControlStore("modelux-control.db")
    v = store.put_config("production", {"strategy": "single", "model": "gpt-4o-mini"},
                         author="alice", message="cheaper")
    store.versions("production")                  # newest first
    store.diff("production", 1, 2)                # JSON Patch (RFC 6902) operations
    store.rollback("production", 1, author="alice")
    store.apply(router, "production")             # the head version goes live in a Router

Calls do disk I/O with the GIL released; the store is thread-safe and another process may
write the same file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Union

from . import _core
from ._errors import NotFoundError

KIND_CONFIG = "config"


class ControlStore:
    """The versioned store of routing configs (and budgets, keys, webhooks: ``kind``)."""

    def __init__(self, path: Union[str, "os.PathLike[str]"] = ":memory:") -> None:
        self._native = _core.ControlStore(os.fspath(path))

    @property
    def path(self) -> str:
        return self._native.path

    def configs(self) -> Dict[str, Dict[str, Any]]:
        """The head version of every (not deleted) routing config: slug → version dict
        (``kind``, ``name``, ``version``, ``author``, ``created``, ``message``, ``action``,
        ``hash``, ``document``)."""
        return {v["name"]: v for v in json.loads(self._native.heads(KIND_CONFIG))}

    def get_config(self, slug: str, version: Optional[int] = None) -> Dict[str, Any]:
        """One version (the head by default); raises :class:`NotFoundError`."""
        text = self._native.get(KIND_CONFIG, slug.lstrip("@"), version or 0)
        if text is None:
            raise NotFoundError(f"config '{slug}' version {version or 'head'} does not exist", kind="not_found")
        return json.loads(text)  # type: ignore[no-any-return]

    def versions(self, slug: str, limit: int = 100) -> List[Dict[str, Any]]:
        """The versions of one config, newest first (without documents)."""
        return json.loads(self._native.history(KIND_CONFIG, slug.lstrip("@"), limit))  # type: ignore[no-any-return]

    def put_config(
        self,
        slug: str,
        document: Mapping[str, Any],
        *,
        author: str = "python",
        message: str = "",
        expected_version: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Stores ``document`` as the next version of ``slug`` (validate it first with
        :meth:`Router.set_routing_config` or :meth:`apply`). ``expected_version``: the head you
        read (0 = must not exist); another head raises a ModeluxError with code
        ``version_conflict``."""
        name = slug.lstrip("@")
        action = "create" if self._native.get(KIND_CONFIG, name, 0) is None else "update"
        return json.loads(  # type: ignore[no-any-return]
            self._native.commit(KIND_CONFIG, name, json.dumps(dict(document)), expected_version, author, message, action)
        )

    def rollback(self, slug: str, version: int, *, author: str = "python", message: str = "") -> Dict[str, Any]:
        """Makes ``version``'s document the new head (a new version, action ``rollback``)."""
        name = slug.lstrip("@")
        old = self.get_config(name, version)
        head = self.get_config(name)
        return json.loads(  # type: ignore[no-any-return]
            self._native.commit(KIND_CONFIG, name, json.dumps(old["document"]), head["version"], author,
                                message or f"rollback to version {version}", "rollback")
        )

    def diff(self, slug: str, a: int, b: Optional[int] = None, *, text: bool = False) -> Any:
        """From version ``a`` to ``b`` (the head by default): JSON Patch operations (a list of
        dicts), or with ``text=True`` a unified line diff (str)."""
        name = slug.lstrip("@")
        da = json.dumps(self.get_config(name, a)["document"])
        vb = self.get_config(name, b)
        db = json.dumps(vb["document"])
        if text:
            return _core.text_diff(da, db, f"{name}@{a}", f"{name}@{vb['version']}")
        return json.loads(_core.json_diff(da, db))

    def apply(self, router: Any, slug: str) -> int:
        """Makes the head version of ``slug`` live in ``router`` (validated and compiled first;
        a bad config raises :class:`InvalidConfigError` and never takes traffic). Returns the
        router's version number of the config."""
        doc = self.get_config(slug)["document"]
        return int(router.set_routing_config(slug.lstrip("@"), doc))

    def audit(self, slug: Optional[str] = None, limit: int = 1000) -> List[Dict[str, Any]]:
        """Audit entries (oldest first), all or one config's."""
        obj = f"{KIND_CONFIG}:{slug.lstrip('@')}" if slug else ""
        return json.loads(self._native.audit(obj, limit))  # type: ignore[no-any-return]

    def verify_audit(self) -> Dict[str, Any]:
        """Walks the audit hash chain: ``{"ok", "checked", "first_bad_seq", "problem"}``."""
        return json.loads(self._native.verify_audit())  # type: ignore[no-any-return]
