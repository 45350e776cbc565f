"""Content-addressed cache of finished cells and expensive artefacts (maps, attacked models).

Keys are sha256 hashes of a canonical JSON of everything the value depends on: the plugin's
config and source file, the suite seed, the device type, the model and data digests, the
batch's sample ids and the source of the whole ``audit`` package (:func:`package_digest`: an
edit to a shared helper, or to the builtin data's rendering, invalidates what it computed). Writes are atomic
(temp file + ``os.replace``); every entry carries the sha256 of its payload and is checked on
load, so a file cut short by a crash reads as a miss, never as a wrong value.

Default location ``~/.cache/explain-audit``; ``--cache DIR`` or ``EXPLAIN_AUDIT_CACHE`` override
it, and ``--cache none`` disables caching.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import signal
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

MAGIC = b"EXPLAIN-AUDIT-CACHE-1\n"


def default_cache_dir() -> Path:
    env = os.environ.get("EXPLAIN_AUDIT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "explain-audit"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def make_key(**parts: Any) -> str:
    return hashlib.sha256(canonical(parts).encode("utf-8")).hexdigest()


@cache
def code_digest(obj: type | str) -> str:
    """sha256 of the source file defining ``obj`` (a class or a module name)."""
    try:
        if isinstance(obj, str):
            import importlib

            obj = importlib.import_module(obj)
        path = inspect.getsourcefile(obj)
        data = Path(path).read_bytes() if path else repr(obj).encode()
    except (TypeError, OSError):
        data = repr(obj).encode()
    return hashlib.sha256(data).hexdigest()[:16]


@cache
def package_digest() -> str:
    """sha256 over the source of every module of the ``audit`` package (read once per process)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _fault_point(name: str, count: int) -> None:
    """Crash injection for the resume tests: SIGKILL this process at the N-th cache write.

    ``EXPLAIN_AUDIT_FAULT=after:N`` kills right after the N-th entry is in place,
    ``EXPLAIN_AUDIT_FAULT=during:N`` after its bytes are written but before it is renamed into
    place, which is the moment a non-atomic cache would leave a torn entry.
    """
    fault = os.environ.get("EXPLAIN_AUDIT_FAULT", "")
    if fault == f"{name}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


class Cache:
    """A folder of checked entries; ``Cache(None)`` caches nothing."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0
        self.writes = 0

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / key

    def get_bytes(self, kind: str, key: str) -> bytes | None:
        if self.root is None:
            return None
        path = self._path(kind, key)
        try:
            blob = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        head = len(MAGIC) + 64
        if not blob.startswith(MAGIC) or len(blob) < head + 1:
            self.misses += 1
            return None
        digest, payload = blob[len(MAGIC):head].decode("ascii", "replace"), blob[head + 1:]
        if hashlib.sha256(payload).hexdigest() != digest:
            path.unlink(missing_ok=True)  # damaged: recompute
            self.misses += 1
            return None
        self.hits += 1
        return payload

    def put_bytes(self, kind: str, key: str, payload: bytes) -> None:
        if self.root is None:
            return
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            self.writes += 1
            _fault_point("during", self.writes)
            os.replace(tmp, path)
            _fault_point("after", self.writes)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- typed helpers -------------------------------------------------------------------------
    def get_json(self, kind: str, key: str) -> Any | None:
        payload = self.get_bytes(kind, key)
        return None if payload is None else json.loads(payload)

    def put_json(self, kind: str, key: str, value: Any) -> None:
        self.put_bytes(kind, key, json.dumps(value, allow_nan=False).encode("utf-8"))

    def get_tensors(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        payload = self.get_bytes(kind, key)
        if payload is None:
            return None
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)

    def put_tensors(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.root is None:
            return
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buffer)
        self.put_bytes(kind, key, buffer.getvalue())
