import torch

from audit.engine.cache import MAGIC, Cache, code_digest, make_key, tensor_digest


def test_keys_are_canonical_and_sensitive():
    assert make_key(a=1, b=[1, 2]) == make_key(b=[1, 2], a=1)
    assert make_key(a=1) != make_key(a=2)
    assert tensor_digest(torch.zeros(3)) != tensor_digest(torch.zeros(4))
    assert tensor_digest(torch.zeros(3)) != tensor_digest(torch.zeros(3, dtype=torch.float64))
    assert len(code_digest("audit.engine.cache")) == 16


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
