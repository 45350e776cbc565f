"""The convergence yardstick of ``benchmarks/rise.py``: error from replicates, no reference map."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SPEC = importlib.util.spec_from_file_location(
    "rise_benchmark", Path(__file__).resolve().parents[2] / "benchmarks" / "rise.py")
rise_benchmark = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(rise_benchmark)


@pytest.mark.parametrize("centred", [False, True])
def test_error_constant_recovers_a_known_noise_level(centred):
    gen = torch.Generator().manual_seed(0)
    images, pixels, replicates, sigma = 6, 4000, 4, 0.6
    limit = 2.0 + torch.randn(images, pixels, generator=gen, dtype=torch.float64)
    maps = limit + sigma * torch.randn(replicates, images, pixels, generator=gen, dtype=torch.float64)
    k, signal = rise_benchmark.error_constants(maps, None, centred)
    shown = limit - limit.mean(-1, keepdim=True) if centred else limit
    # centring removes one of the pixels' independent noise directions
    noise = sigma ** 2 * (pixels - 1 if centred else pixels)
    assert torch.allclose(signal, (shown ** 2).sum(-1), rtol=0.04)
    assert torch.allclose(k, (noise / (shown ** 2).sum(-1)).sqrt(), rtol=0.05)


def test_signal_estimate_is_unbiased_when_the_noise_dwarfs_the_map():
    gen = torch.Generator().manual_seed(1)
    limit = torch.full((1, 50), 0.1, dtype=torch.float64)
    estimates = [rise_benchmark.error_constants(limit + torch.randn(4, 1, 50, generator=gen, dtype=torch.float64),
                                                None, False)[1] for _ in range(2000)]
    # the squared norm of the replicates' mean alone would be ~13.0 (0.5 + 50 / 4); the truth is 0.5
    assert float(torch.cat(estimates).mean()) == pytest.approx(0.5, abs=0.1)


def test_an_unresolved_signal_gives_nan_not_a_huge_error_constant():
    gen = torch.Generator().manual_seed(1)
    limit = torch.full((1, 50), 0.1, dtype=torch.float64)
    draws = [rise_benchmark.error_constants(limit + torch.randn(4, 1, 50, generator=gen, dtype=torch.float64),
                                            None, False) for _ in range(200)]
    k, signal = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])
    assert bool((signal <= 0).any())  # the unbiased estimate does go negative here
    assert bool(k[signal <= 0].isnan().all())
    assert bool((k[signal > 0] < 1e3).all())  # and finite, sensible values elsewhere


def test_convergence_row_refuses_an_unresolved_map(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    noisy = 0.01 + torch.randn(4, 3, 50, generator=gen, dtype=torch.float64)  # noise dwarfs the map
    assert bool((rise_benchmark.error_constants(noisy, None, False)[1] <= 0).any())
    monkeypatch.setattr(rise_benchmark, "replicate_maps",
                        lambda *args: dict.fromkeys(("plain", "orthogonal", "orthogonal_logistic", "control_variate"),
                                                    noisy))
    with pytest.raises(SystemExit, match="cannot resolve"):
        rise_benchmark.convergence_row("noise", None, SimpleNamespace(size=50), torch.zeros(3, 1), None,
                                       None, [10], 4)
