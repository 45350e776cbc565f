import os
import signal
import subprocess
import sys

import torch

from audit.engine.cache import MAGIC, Cache, code_digest, make_key, package_digest
from audit.models.sources import model_digest


def test_keys_are_canonical_and_sensitive():
    assert make_key(a=1, b=[1, 2]) == make_key(b=[1, 2], a=1)
    assert make_key(a=1) != make_key(a=2)
    # the model digest that goes into every key sees a tensor's shape, dtype and values
    base = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(base.weight)
    wider = torch.nn.Linear(4, 1, bias=False)
    torch.nn.init.zeros_(wider.weight)
    assert model_digest(base) != model_digest(wider)
    assert model_digest(base) != model_digest(base.double())
    before = model_digest(base)
    with torch.no_grad():
        base.weight[0, 0] = 1e-7
    assert model_digest(base) != before
    assert len(code_digest("audit.engine.cache")) == 16
    assert code_digest("audit.engine.cache") != code_digest("audit.engine.runner")
    assert len(package_digest()) == 16 and package_digest() == package_digest()


def test_round_trip_and_damage_detection(tmp_path):
    cache = Cache(tmp_path)
    cache.put_json("cells", "ab" * 32, [{"v": 1.5}])
    cache.put_tensors("maps", "cd" * 32, {"map": torch.arange(6.0).view(2, 3)})
    assert cache.get_json("cells", "ab" * 32) == [{"v": 1.5}]
    assert torch.equal(cache.get_tensors("maps", "cd" * 32)["map"], torch.arange(6.0).view(2, 3))
    path = tmp_path / "cells" / "ab" / ("ab" * 32)
    blob = path.read_bytes()
    assert blob.startswith(MAGIC)
    path.write_bytes(blob[:-3] + b"xyz")  # same length, wrong content
    assert cache.get_json("cells", "ab" * 32) is None and not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob[: len(blob) // 2])  # cut short
    assert cache.get_json("cells", "ab" * 32) is None
    assert cache.hits == 2 and cache.misses == 2
    # no temp files are left behind
    assert not list(tmp_path.rglob(".tmp-*"))


def test_disabled_cache_stores_nothing(tmp_path):
    cache = Cache(None)
    cache.put_json("cells", "k" * 64, [1])
    assert cache.get_json("cells", "k" * 64) is None and not cache.enabled


def test_fault_point_kills_at_exactly_the_named_write(tmp_path):
    script = ("import sys; from pathlib import Path; from audit.engine.cache import Cache\n"
              "c = Cache(Path(sys.argv[1]))\n"
              "for i in range(4): c.put_json('cells', f'{i:02d}' * 32, [i])\n")
    env = {**os.environ, "EXPLAIN_AUDIT_FAULT": "after:2"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env)
    assert proc.returncode == -signal.SIGKILL
    entries = sorted(p.name[:2] for p in tmp_path.rglob("*") if p.is_file())
    assert entries == ["00", "01"]  # the first two are in place, the third was never started
    env["EXPLAIN_AUDIT_FAULT"] = ""
    assert subprocess.run([sys.executable, "-c", script, str(tmp_path / "clean")], env=env).returncode == 0
