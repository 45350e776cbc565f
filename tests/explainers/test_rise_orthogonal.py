"""RISE's orthogonal mask design: the array's strength, each mask's distribution, the same limit,
exactness for low-degree scores, and fewer masks for the same error."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import ValidationError

from audit.explainers.rise import RiseParams, rise_maps, rise_mask_stream
from audit.rise_masks import OrthogonalMasks, sobol_shifts, strength3_array
from audit.seeding import derive_seed
from audit.spec import InputSpec
from tests.explainers.rise_helpers import Polynomial, exact_limit, recover_cells, small_nonlinear_model

SPEC = InputSpec(8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def pattern_counts(array: torch.Tensor, t: int) -> torch.Tensor:
    """(number of t-column subsets, 2^t): how often each pattern appears in each subset."""
    subsets = torch.tensor(list(itertools.combinations(range(array.shape[1]), t)))
    weights = 2 ** torch.arange(t)
    codes = (array[:, subsets] * weights).sum(-1)  # (runs, subsets)
    return torch.stack([torch.bincount(c, minlength=2 ** t) for c in codes.T])


@pytest.mark.parametrize("columns", [1, 2, 3, 4, 9, 16, 49, 64])
def test_every_pattern_of_any_three_columns_appears_equally_often(columns):
    array = strength3_array(columns)
    runs = array.shape[0]
    assert array.shape[1] == columns and runs <= max(2, 4 * columns)
    for t in range(1, min(3, columns) + 1):
        counts = pattern_counts(array, t)
        assert (counts == runs // 2 ** t).all(), t


def test_the_array_is_not_stronger_than_claimed():
    """Strength 4 would need at least 2081 runs for 64 columns (Rao's bound); 128 cannot have it."""
    counts = pattern_counts(strength3_array(16), 4)
    assert (counts != counts[:, :1]).any()


def test_sobol_shifts_cover_every_shift_once_and_extend_their_prefix():
    shifts = sobol_shifts(64, (8, 8), seed=3)
    assert len({tuple(s) for s in shifts.tolist()}) == 64  # a (0, 6, 2)-net: each shift once
    assert shifts[:8, 0].sort().values.tolist() == list(range(8))  # first 8 stratify each axis
    assert torch.equal(sobol_shifts(5, (8, 8), seed=3), shifts[:5])
    assert not torch.equal(sobol_shifts(64, (8, 8), seed=4), shifts)
    odd = sobol_shifts(10, (3, 5), seed=1)
    assert odd[:, 0].max() < 3 and odd[:, 1].max() < 5 and odd.min() >= 0


def test_each_shift_is_uniform_over_seeds():
    firsts = torch.stack([sobol_shifts(3, (4, 4), seed=s)[2] for s in range(1600)])
    counts = torch.bincount(firsts[:, 0] * 4 + firsts[:, 1], minlength=16).double()
    chi2 = float(((counts - 100) ** 2 / 100).sum())
    assert chi2 < 45, chi2  # 15 degrees of freedom: P(chi2 > 45) < 1e-4


def test_each_mask_has_independent_fair_cells():
    """Any one row of a randomised block is uniform over all 2^cells patterns (the flips)."""
    counts = torch.zeros(16)
    make = OrthogonalMasks(8 * 1600, (8, 8), 2, seed=0)
    assert make.part == make.runs == 8
    for block in range(1600):  # the first row of each of 1600 blocks
        grids = recover_cells(make(1, None, block), 2, make.shifts[block])
        counts[int((grids[0].flatten() * torch.tensor([1, 2, 4, 8])).sum())] += 1
    chi2 = float(((counts - 100) ** 2 / 100).sum())
    assert chi2 < 45, chi2  # 15 degrees of freedom: P(chi2 > 45) < 1e-4


def test_parts_of_a_large_block_are_the_array_rows():
    """Grid 9 (81 cells): blocks of 256 made in parts of 128 are rows of strength3_array, the
    block's columns and flips shared by its parts, and the whole block balanced."""
    make = OrthogonalMasks(600, (18, 18), 9, seed=4)
    assert (make.runs, make.part) == (256, 128)
    block = torch.cat([make(128, None, 0), make(128, None, 1)])
    cells = recover_cells(block, 9, make.shifts[0]).flatten(1).long()
    full = strength3_array(128)  # all columns the block chooses from
    rows, columns, flips = make._randomisation(0)
    torch.testing.assert_close(cells, full[rows][:, columns] ^ flips)
    assert (pattern_counts(cells, 3) == 32).all()  # every pattern of any 3 of the 81 cells
    third = recover_cells(make(128, None, 2), 9, make.shifts[1])  # the next block: another shift
    assert third.shape == (128, 9, 9)


def test_large_grids_hold_one_part_of_masks():
    """Grid 100 (16 384 cells, blocks of 32 768): no array of the block is ever built."""
    params = RiseParams(n_masks=40, grid=100, batch_size=40)
    masks = torch.cat(list(rise_mask_stream(params, (100, 100), 1, 40, reuse=False)))
    assert masks.shape == (40, 1, 100, 100)
    assert 0.4 < float(masks.mean()) < 0.6


def test_expectation_normalisation_keeps_iid_unless_whole_blocks():
    """Whole blocks make sum_i M_i flat, a partial block does not: auto keeps the paper's masks
    with the paper's normalisation, and orthogonal asks for whole blocks."""
    assert RiseParams(normalize="expectation").mask_design == "iid"
    assert RiseParams(normalize="expectation", design="orthogonal", n_masks=256).mask_design == "orthogonal"
    with pytest.raises(ValidationError, match="n_masks: 1920 or 2048"):
        RiseParams(normalize="expectation", design="orthogonal", n_masks=2000)
    density = torch.cat(list(rise_mask_stream(RiseParams(n_masks=256, design="orthogonal", grid=4),
                                              (16, 16), 3, 256, reuse=False)))[:, 0].sum(0)
    torch.testing.assert_close(density, torch.full_like(density, 128.0))


@pytest.mark.parametrize("degree", [1, 2])
def test_exact_for_scores_of_degree_two_in_the_cells(degree):
    """With every shift once (16 blocks of 8 on an 8-px image, grid 2), the map is the limit."""
    model, x = Polynomial(degree), torch.ones(1, 3, 8, 8)  # fill zero: the masked image is the mask
    target = torch.zeros(1, dtype=torch.long)
    limit = exact_limit(model, x, 2)
    params = RiseParams(n_masks=128, grid=2, batch_size=64)
    assert params.mask_design == "orthogonal"
    ours = rise_maps(model, x, target, SPEC, params, seed=3)[0]
    iid = rise_maps(model, x, target, SPEC, params.model_copy(update={"design": "iid"}), seed=3)[0]
    torch.testing.assert_close(ours, limit, rtol=0, atol=2e-6)
    assert (iid - limit).abs().max() > 1e-3  # the i.i.d. masks are only near it


def test_not_exact_beyond_degree_two():
    """Degree 3 times the mask's own degree 1 meets the array's aliasing: a sample, not exact."""
    model, x = Polynomial(3), torch.ones(1, 3, 8, 8)
    ours = rise_maps(model, x, torch.zeros(1, dtype=torch.long), SPEC, RiseParams(n_masks=128, grid=2), seed=3)
    assert (ours[0] - exact_limit(model, x, 2)).abs().max() > 1e-4


def test_converges_to_rise_limit_on_a_nonlinear_model():
    model = small_nonlinear_model()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1])
    limit = exact_limit(model, x, 2, target=1)
    errors = {}
    for design in ("orthogonal", "iid"):
        maps = [rise_maps(model, x, target, SPEC, RiseParams(n_masks=n, grid=2, design=design, batch_size=512),
                          seed=7)[0] for n in (128, 4096)]
        errors[design] = [float((m - limit).abs().max()) for m in maps]
    spread = float(limit.max() - limit.min())
    assert errors["orthogonal"][1] < 0.01 * spread, (errors, spread)  # the same limit
    assert errors["orthogonal"][1] < errors["orthogonal"][0]


def test_fewer_masks_for_the_same_error_on_a_nonlinear_model():
    """Against a long run, 256 orthogonal masks are nearer than 256 i.i.d. ones (4 seeds)."""
    model = small_nonlinear_model()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1])
    base = dict(grid=4, batch_size=256)
    long = rise_maps(model, x, target, SPEC, RiseParams(n_masks=16384, **base), seed=50)
    errors = {}
    for design in ("orthogonal", "iid"):
        short = [rise_maps(model, x, target, SPEC, RiseParams(n_masks=256, design=design, **base), seed=s)
                 for s in range(4)]
        errors[design] = sum(float((m - long).pow(2).mean()) for m in short)
    assert errors["orthogonal"] < 0.5 * errors["iid"], errors


def test_masks_do_not_depend_on_chunks_and_extend_their_prefix():
    params = RiseParams(n_masks=300, grid=4)
    whole = torch.cat(list(rise_mask_stream(params, (16, 16), 5, 1000, reuse=False)))
    assert whole.shape == (300, 1, 16, 16)
    for chunk in (7, 32, 100):
        assert torch.equal(torch.cat(list(rise_mask_stream(params, (16, 16), 5, chunk, reuse=False))), whole)
    short = params.model_copy(update={"n_masks": 70})
    assert torch.equal(torch.cat(list(rise_mask_stream(short, (16, 16), 5, 1000, reuse=False))), whole[:70])
    # a full block of 32 (16 cells) keeps every cell exactly half the time, every pair a quarter
    shift = sobol_shifts(1, (4, 4), derive_seed(5, "rise-oa-shifts", 4))[0]
    cells = recover_cells(whole[:32], 4, shift).flatten(1)
    assert (cells.mean(0) == 0.5).all()
    assert ((cells.T @ cells) / 32 == 0.25 + 0.25 * torch.eye(16)).all()


def test_design_follows_p_and_refuses_orthogonal_with_another_p():
    assert RiseParams().mask_design == "orthogonal"
    assert RiseParams(p=0.3).mask_design == "iid"
    assert RiseParams(design="iid").mask_design == "iid"
    with pytest.raises(ValidationError, match="design: iid"):
        RiseParams(design="orthogonal", p=0.3)
