"""Occlusion: known answers on a model linear in its pixels, the partition, conformance."""

import pytest
import torch

from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.explainers.occlusion import cell_edges, cell_masks
from audit.testing import check_explainer
from tests.metrics.helpers import SPEC, LinearProbabilityModel


@pytest.mark.parametrize("side, grid", [(16, 4), (17, 4), (10, 3), (3, 8)])
def test_cells_partition_the_image(side, grid):
    masks = cell_masks(side, side + 1, grid)
    assert masks.sum(dim=0).eq(1).all()  # every pixel in exactly one cell
    edges = cell_edges(side, grid)
    assert edges[0] == 0 and edges[-1] == side and len(edges) == min(grid, side) + 1
    assert max(b - a for a, b in zip(edges, edges[1:], strict=False)) - min(
        b - a for a, b in zip(edges, edges[1:], strict=False)) <= 1


def test_each_cell_gets_the_probability_its_pixels_carry():
    """p = 0.1 + Σ w·x₀: filling a cell with 0 (zero fill) lowers p by exactly that cell's Σ w·x₀."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.rand(16, 16, generator=gen) * 2e-3
    model = LinearProbabilityModel(weight, 0.1)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    target = torch.zeros(2, dtype=torch.long)
    maps = EXPLAINERS.create("occlusion", {"grid": 4})(model, x, target, ExplainContext(SPEC, 0, (0, 1)))
    expected = torch.zeros(2, 16, 16)
    for r in range(0, 16, 4):
        for c in range(0, 16, 4):
            expected[:, r:r + 4, c:c + 4] = (weight[r:r + 4, c:c + 4] * x[:, 0, r:r + 4, c:c + 4]).sum(dim=(1, 2)).view(
                2, 1, 1)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)
    # the other class: the same drops, negated (p₁ = 1 − p₀)
    other = EXPLAINERS.create("occlusion", {"grid": 4})(model, x, target + 1, ExplainContext(SPEC, 0, (0, 1)))
    torch.testing.assert_close(other, -expected, rtol=0, atol=1e-6)


def test_occlusion_conforms():
    check_explainer(EXPLAINERS.create("occlusion", {"grid": 4}))
    check_explainer(EXPLAINERS.create("occlusion", {"grid": 4, "fill": "noise"}))
