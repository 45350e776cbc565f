"""Explainers that train (issue I) on the engine's trained-state machinery (issue E): one
training per explained model, cached without the audited images in the key, shipped to
workers, handed to ``explain`` in ``ExplainContext.trained``."""

from contextlib import contextmanager
from pathlib import Path

import torch

from audit.attacks.base import ATTACKS
from audit.engine.cache import Cache
from audit.engine.prepare import PreparationError
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.explainers.base import EXPLAINERS, Explainer
from tests.engine.test_prepare import CountingNoise, CountingTrainer


class Learner(Explainer):
    """Test explainer: 'learns' the explained model's mean top logit on training images; its map
    is that number times |x| summed over channels, so every map shows which state it got."""

    needs_gradients = False
    needs_training_data = True
    trained: list = []  # the models it was trained on, in order

    def train(self, model, ctx):
        type(self).trained.append(model)
        batch = ctx.train_batch(4, "learn")
        with torch.no_grad():
            value = model(ctx.spec.normalize(batch.images)).amax(dim=1).mean()
        ctx.step(1, 1, loss=float(value))
        return {"value": value.reshape(1)}

    def explain(self, model, x, target, ctx):
        return ctx.trained["value"] * x.abs().sum(dim=1)

    def state_summary(self, state):
        return {"value": float(state["value"])}


@contextmanager
def registered():
    ATTACKS.add("trainer", CountingTrainer)
    ATTACKS.add("counting_noise", CountingNoise)
    EXPLAINERS.add("learner", Learner)
    try:
        yield
    finally:
        ATTACKS._plugins.pop("trainer", None)
        ATTACKS._plugins.pop("counting_noise", None)
        EXPLAINERS._plugins.pop("learner", None)


def suite(tmp_path: Path, n: int = 4, train: str = "") -> Path:
    path = tmp_path / f"suite-{n}-{bool(train)}.yaml"
    data = f"{{source: builtin:shapes, n: {n}, batch_size: 2{train}}}"
    path.write_text("\n".join(["name: learn", "seed: 4", "device: cpu", "model: {source: builtin:shapes-resnet}",
                               f"data: {data}", "explainers: [learner]",
                               "attacks: [none, counting_noise, trainer]", "metrics: [spearman]", ""]))
    return path


def test_one_training_per_explained_model_cached_and_shipped(tmp_path):
    with registered():
        path = suite(tmp_path)
        cache = Cache(tmp_path / "cache")
        Learner.trained = []
        runner = Runner(load_suite(path), cache)
        runner.preparation.prepare_all()
        # the original model and the model attack's; the input attack explains the original model
        assert len(Learner.trained) == 2
        assert Learner.trained[0] is runner.model.model
        assert Learner.trained[1] is runner.attacked_model("trainer")
        clean = runner.preparation.explainer_state("learner", None)
        assert runner.preparation.explainer_state("learner", "none") is clean
        assert runner.preparation.explainer_state("learner", "counting_noise") is clean
        attacked = runner.preparation.explainer_state("learner", "trainer")
        # what explain receives in each setting (the runner's maps and the metrics' explain calls)
        assert runner.explain_context("learner", "trainer", (0, 1)).trained is attacked
        assert runner.explain_context("learner", "counting_noise", (0, 1)).trained is clean
        assert not torch.equal(attacked["value"], clean["value"])  # the trainer scales the logits
        # the run's records use each setting's state: the map of the model attack is scaled by it
        records = [r for unit in runner.units() for r in runner.run_unit(unit)]
        assert all(r["status"] == "ok" for r in records)
        # stages and manifest summaries name the explained model
        assert {"prepare learner", "prepare learner on trainer"} <= set(runner.timings)
        summaries = runner.preparation.summaries()
        assert summaries["learner"]["value"] == float(clean["value"])
        assert summaries["learner on trainer"]["value"] == float(attacked["value"])

        # a second run imports the cached states: nothing trains
        again = Runner(load_suite(path), cache)
        again.preparation.prepare_all()
        assert len(Learner.trained) == 2
        assert torch.equal(again.preparation.explainer_state("learner", "trainer")["value"], attacked["value"])
        # other audited images (n), same model and training data: the same state (it never saw them)
        other_n = Runner(load_suite(suite(tmp_path, n=6)), cache)
        assert other_n.preparation.explainer_key("learner", None) == runner.preparation.explainer_key("learner", None)
        assert torch.equal(other_n.preparation.explainer_state("learner", None)["value"], clean["value"])
        assert len(Learner.trained) == 2  # (an attacked model's key holds the audited data's digest, as
        # the attack's own cache key does, so its state is shared only where the attacked model is)
        # other training data: another key, trained again, and the cells' keys change too
        val = ", train: {source: builtin:shapes, split: val}"
        other_train = Runner(load_suite(suite(tmp_path, train=val)), cache)
        clean_key = runner.preparation.explainer_key("learner", None)
        assert other_train.preparation.explainer_key("learner", None) != clean_key
        assert other_train.cell_key("trainer", "learner", "spearman", (0, 1)) != \
            runner.cell_key("trainer", "learner", "spearman", (0, 1))
        other_train.preparation.explainer_state("learner", None)
        assert len(Learner.trained) == 3

        # a worker built from the shipment (no cache) trains nothing and gets the same states
        shipped = runner.preparation.shipment()
        worker = Runner(load_suite(path), Cache(None), model=runner.model, data=runner.data,
                        training=runner.training, shipped=shipped)
        assert torch.equal(worker.preparation.explainer_state("learner", "trainer")["value"], attacked["value"])
        assert [r for unit in worker.units() for r in worker.run_unit(unit)] == records
        assert len(Learner.trained) == 3
        # a worker without it refuses to train: the cells are errors with the reason
        lost = Runner(load_suite(path), Cache(None), model=runner.model, data=runner.data,
                      training=runner.training, shipped={})
        lost_records = lost.run_unit(lost.units()[0])
        learner = [r for r in lost_records if r["explainer"] == "learner"]
        assert learner and all(r["status"] == "error" for r in learner)
        assert all("shipped no trained state" in r["reason"] for r in learner if r["attack"] != "trainer")
        assert len(Learner.trained) == 3


def test_an_explainer_that_fails_to_train_errors_its_cells_with_the_reason(tmp_path):
    class Broken(Learner):
        def train(self, model, ctx):
            raise RuntimeError("out of patience")

    with registered():
        EXPLAINERS._plugins["learner"] = Broken
        Broken.name = "learner"
        runner = Runner(load_suite(suite(tmp_path)), Cache(None))
        runner.preparation.prepare_all()
        try:
            runner.preparation.explainer_state("learner", None)
        except PreparationError as exc:
            assert "out of patience" in str(exc)
        else:
            raise AssertionError("no error")
        records = [r for unit in runner.units() for r in runner.run_unit(unit) if r["explainer"] == "learner"]
        assert records and all(r["status"] == "error" and "out of patience" in r["reason"] for r in records)
