"""The orthogonal array of ``benchmarks/rise_designs.py``: strength 3, as its docstring claims."""

import importlib.util
import itertools
from pathlib import Path

import torch

SPEC = importlib.util.spec_from_file_location(
    "rise_designs", Path(__file__).resolve().parents[2] / "benchmarks" / "rise_designs.py")
rise_designs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(rise_designs)


def test_every_three_columns_show_every_pattern_equally_often():
    array = rise_designs.ARRAY
    assert array.shape == (128, 64)
    triples = torch.tensor(list(itertools.combinations(range(64), 3)))  # all 41 664
    patterns = (array[:, triples] * torch.tensor([4, 2, 1])).sum(-1)  # (128, triples)
    counts = torch.nn.functional.one_hot(patterns, 8).sum(0)  # (triples, 8)
    assert counts.eq(16).all()


def test_designs_keep_the_cells_uniform():
    gen = torch.Generator().manual_seed(0)
    cells, shift_y, _ = rise_designs.design("oa_fixed_shift", 128 * 64, gen)
    assert abs(float(cells.mean()) - 0.5) < 0.01  # random flips: each cell kept half the time
    assert shift_y.view(64, 128).eq(shift_y.view(64, 128)[:, :1]).all()  # one shift per block
