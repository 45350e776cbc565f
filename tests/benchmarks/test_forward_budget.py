"""``benchmarks/forward_budget.py`` counts the images each stage sends through a model."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from audit.engine.progress import Progress
from audit.engine.run import run_suite
from audit.engine.runner import Runner
from audit.engine.suite import load_suite

SPEC = importlib.util.spec_from_file_location(
    "forward_budget", Path(__file__).resolve().parents[2] / "benchmarks" / "forward_budget.py")
forward_budget = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(forward_budget)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.inner(x) + self.inner(x)


class Timed:  # what Runner._timed needs of its runner
    def __init__(self):
        self.timings = {"explain fake": 0.0}


def test_outermost_calls_count_once_per_image_split_by_graph():
    model = Outer()
    x = torch.zeros(5, 3, 4, 4)
    with forward_budget.ForwardCounter() as counter:
        with torch.no_grad():
            model(x)  # the inner module's two calls are part of this one
        Runner._timed(Timed(), "explain fake", model, x[:3])  # records a graph: 3 images
        with torch.no_grad():
            nn.Linear(3, 1)(torch.zeros(2, 3))  # not an image batch: not counted
    assert counter.images[forward_budget.OUTSIDE] == {"forward": 5, "graph": 0}
    assert counter.images["explain fake"] == {"forward": 0, "graph": 3}
    assert counter.depth == 0


def test_images_after_a_model_argument_count():
    class Masker(nn.Module):  # called as (classifier, x), as the realtime-saliency masking model
        def forward(self, classifier, x):
            return classifier(x)

    with forward_budget.ForwardCounter() as counter, torch.no_grad():
        Masker()(Outer(), torch.zeros(4, 3, 2, 2))
    assert counter.images[forward_budget.OUTSIDE] == {"forward": 4, "graph": 0}


def test_a_failing_call_leaves_the_depth_balanced():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("no")

    with forward_budget.ForwardCounter() as counter:
        with pytest.raises(RuntimeError):
            Broken()(torch.zeros(1, 3, 2, 2))
        with torch.no_grad():
            Outer()(torch.zeros(2, 3, 2, 2))
    assert counter.depth == 0
    # the failed call counted (it recorded a graph) and the next one was still outermost
    assert counter.images[forward_budget.OUTSIDE] == {"forward": 2, "graph": 1}


@pytest.mark.slow
def test_a_run_counts_what_each_plugin_forwards(tmp_path):
    n, masks = 6, 16
    suite = tmp_path / "s.yaml"
    suite.write_text(f"""
name: budget
seed: 0
device: cpu
model: {{source: "builtin:shapes-resnet"}}
data: {{source: "builtin:shapes", split: test, n: {n}, batch_size: 4}}
explainers: [saliency, {{rise: {{n_masks: {masks}}}}}]
attacks: [none, {{gaussian_noise: {{sigma: 0.05}}}}]
metrics: [crop]
""")
    with forward_budget.ForwardCounter() as counter:
        run_suite(load_suite(suite), tmp_path / "out", Progress(quiet=True), cache_dir=None)
    settings = 2
    # RISE: one forward per mask and image (no graph); saliency: one gradient pass per image;
    # crop: one crop per map, for both explainers
    assert counter.images["explain rise"] == {"forward": masks * n * settings, "graph": 0}
    assert counter.images["explain saliency"] == {"forward": 0, "graph": n * settings}
    assert counter.images["metric crop"] == {"forward": 2 * n * settings, "graph": 0}
