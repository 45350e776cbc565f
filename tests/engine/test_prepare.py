"""Attack preparation and the attack interface's engine side (issue E §1): training data in the
suite, preparation once (cache, shipping to workers), attacked images once per batch, keys from
resolved parameters."""

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from audit.attacks.base import ATTACKS, Attack
from audit.engine.cache import Cache
from audit.engine.prepare import PreparationError
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.errors import SuiteError
from audit.registry import Params


class _Scale(nn.Module):
    def __init__(self, base: nn.Module, scale: torch.Tensor):
        super().__init__()
        self.base, self.scale = base, nn.Parameter(scale, requires_grad=False)

    def forward(self, x):
        return self.base(x) * self.scale


class CountingTrainerParams(Params):
    steps: int = 3


class CountingTrainer(Attack):
    """Test attack: 'learns' a logit scale from training images; counts its preparations."""

    Params = CountingTrainerParams
    kind = "model"
    needs_training_data = True
    prepared = 0
    drawn: list = []

    def prepare(self, model, ctx):
        type(self).prepared += 1
        total = torch.zeros(())
        for step in range(self.params.steps):
            batch = ctx.train_batch(4, "scale", step)
            type(self).drawn.append(batch.ids)
            total = total + batch.images.mean()
            ctx.step(step + 1, self.params.steps, loss=float(total))
        return _Scale(model, 1.0 + total / self.params.steps)

    def export_state(self, attacked):
        return {"scale": attacked.scale.detach().clone()}

    def import_state(self, model, state):
        return _Scale(model, state["scale"].clone())


class CountingNoise(Attack):
    """Test attack: seeded input noise; counts its perturb calls."""

    kind = "input"
    calls = 0

    def perturb(self, model, x, target, ctx):
        type(self).calls += 1
        gens = [ctx.sample_generator(i) for i in range(x.shape[0])]
        return x + 0.05 * torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens])


@contextmanager
def registered(**plugins):
    for name, cls in plugins.items():
        ATTACKS.add(name, cls)
    try:
        yield
    finally:
        for name in plugins:
            ATTACKS._plugins.pop(name, None)


def suite(tmp_path: Path, attacks: str, data: str = "{source: builtin:shapes, n: 4, batch_size: 2}",
          explainers: str = "[saliency]") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("\n".join(["name: prep", "seed: 4", "device: cpu", "model: {source: builtin:shapes-resnet}",
                               f"data: {data}", f"explainers: {explainers}", f"attacks: {attacks}",
                               "metrics: [spearman, agreement]", ""]))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    return err.value.problems


def test_a_trainer_without_training_data_is_a_problem_at_its_line(tmp_path):
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    with registered(trainer=CountingTrainer):
        path = suite(tmp_path, "\n  - none\n  - trainer", data=f"{{source: 'folder:{tmp_path / 'imgs'}', n: 1}}")
        found = problems(path)
        assert len(found) == 1 and found[0].startswith(f"{path}:9: attacks: trainer trains")
        assert "add data.train" in found[0]
        # the audited folder itself, or a folder around it, is refused as training data
        for train in (tmp_path / "imgs", tmp_path):
            data = f"{{source: 'folder:{tmp_path / 'imgs'}', n: 1, train: {{source: 'folder:{train}'}}}}"
            found = problems(suite(tmp_path, "[none, trainer]", data=data))
            assert len(found) == 1 and "training images are the audited images" in found[0]
        # the builtin default trains on split train; the audited split is refused
        load_suite(suite(tmp_path, "[none, trainer]"))
        found = problems(suite(tmp_path, "[none, trainer]",
                               data="{source: builtin:shapes, n: 4, train: {source: builtin:shapes, split: test}}"))
        assert len(found) == 1 and "audited images" in found[0]
        found = problems(suite(tmp_path, "[none, trainer]",
                               data="{source: builtin:shapes, n: 4, train: {source: builtin:shapes, split: nope}}"))
        assert len(found) == 1 and "data.train.split" in found[0]
    # without a plugin that trains, data.train is not required
    load_suite(suite(tmp_path, "[none]", data=f"{{source: 'folder:{tmp_path / 'imgs'}', n: 1}}"))


def test_trained_state_is_cached_shipped_and_keyed_by_training_data(tmp_path):
    with registered(trainer=CountingTrainer):
        path = suite(tmp_path, "[none, trainer]")
        cache = Cache(tmp_path / "cache")
        CountingTrainer.prepared, CountingTrainer.drawn = 0, []
        runner = Runner(load_suite(path), cache)
        attacked = runner.attacked_model("trainer")
        assert CountingTrainer.prepared == 1 and not attacked.training
        first_draws = list(CountingTrainer.drawn)
        # the training images come from split train, never the audited test images
        assert runner.training.dataset.split == "train"
        # a second runner imports the cached state: no training, same model
        again = Runner(load_suite(path), cache).attacked_model("trainer")
        assert CountingTrainer.prepared == 1 and torch.equal(again.scale, attacked.scale)
        # a worker built from the shipment (no cache) does not train either
        shipped = runner.preparation.shipment()
        worker = Runner(load_suite(path), Cache(None), model=runner.model, data=runner.data,
                        training=runner.training, shipped=shipped)
        assert torch.equal(worker.attacked_model("trainer").scale, attacked.scale)
        assert CountingTrainer.prepared == 1
        # a worker without the shipped state refuses to train
        lost = Runner(load_suite(path), Cache(None), model=runner.model, data=runner.data,
                      training=runner.training, shipped={})
        assert isinstance(lost.attacked_model("trainer"), PreparationError)
        # the same draws on a fresh, uncached run; other training data is another key
        CountingTrainer.drawn = []
        fresh = Runner(load_suite(path), Cache(None))
        assert torch.equal(fresh.attacked_model("trainer").scale, attacked.scale)
        assert CountingTrainer.drawn == first_draws
        other = suite(tmp_path, "[none, trainer]",
                      data="{source: builtin:shapes, n: 4, train: {source: builtin:shapes, split: val}}")
        other_runner = Runner(load_suite(other), cache)
        assert other_runner.preparation.key("trainer") != runner.preparation.key("trainer")
        assert not torch.equal(other_runner.attacked_model("trainer").scale, attacked.scale)
        assert CountingTrainer.prepared == 3


def test_attacked_images_are_computed_once_per_batch(tmp_path):
    with registered(counting_noise=CountingNoise):
        path = suite(tmp_path, "[none, counting_noise]", explainers="[saliency, {id: s2, saliency: {}}]")
        CountingNoise.calls = 0
        runner = Runner(load_suite(path), Cache(None))
        records = [r for unit in runner.units() for r in runner.run_unit(unit)]
        assert runner.n_batches() == 2 and len(runner.units()) == 6  # 2 batches x (model + 2 explainers)
        assert CountingNoise.calls == 2
        # through the cache, a second run perturbs nothing
        cache = Cache(tmp_path / "cache")
        first = Runner(load_suite(path), cache)
        for unit in first.units():
            first.run_unit(unit)
        CountingNoise.calls = 0
        second = Runner(load_suite(path), cache)
        second._item_keys[("metrics", "spearman")] = {"bust": 1}  # cells miss, attacked images hit
        again = [r for unit in second.units() for r in second.run_unit(unit)]
        assert CountingNoise.calls == 0
        assert [r["value"] for r in again if r["metric"] == "agreement"] == \
            [r["value"] for r in records if r["metric"] == "agreement"]


def test_cache_keys_come_from_resolved_parameters(tmp_path):
    from audit.explainers.rise import RiseParams

    default = RiseParams().n_masks
    keys = []
    for params in ("{}", f"{{n_masks: {default}}}", f"{{n_masks: {default + 1}}}"):
        runner = Runner(load_suite(suite(tmp_path, "[none]", explainers=f"[{{rise: {params}}}]")), Cache(None))
        keys.append(runner.cell_key("none", "rise", "spearman", (0, 1)))
    assert keys[0] == keys[1] != keys[2]
