"""Adversarial model manipulation (Heo et al. 2019, METHODS §4): penalties, fine-tuning, state."""

import copy
import json

import pytest
import torch

from audit.attacks import _fooling
from audit.attacks.base import AttackContext
from audit.attacks.manipulation import CURVE_PREFIX, Manipulation
from audit.data.sources import PairsData, ShapesData
from audit.data.training import TrainingSet
from audit.engine.cache import Cache
from audit.engine.runner import Runner
from audit.engine.suite import load_suite
from audit.errors import SuiteError
from audit.testing import TINY_SPEC, model_fingerprint, tiny_inputs, tiny_model, tiny_training_set

# -- penalty formulas: known answers ------------------------------------------------------------


def test_frame_width_follows_methods():
    m = _fooling.frame(8, 8)
    assert m.sum() == 64 - 36 and m[0].all() and m[:, 0].all() and not m[1:7, 1:7].any()
    assert _fooling.frame(14, 14).sum() == 14 * 14 - 10 * 10  # width ⌊14/7⌋ = 2
    assert _fooling.frame(8, 8, width=2).sum() == 64 - 16


def test_location_penalty_known_answers():
    frame = _fooling.frame(8, 8).expand(2, 8, 8)
    assert _fooling.location_penalty(frame).item() == 0.0
    # an empty map misses every frame cell: the frame's area share
    assert _fooling.location_penalty(torch.zeros(2, 8, 8)).item() == pytest.approx(28 / 64)
    # an all-ones map is wrong on the 36 inner cells
    assert _fooling.location_penalty(torch.ones(1, 8, 8)).item() == pytest.approx(36 / 64)


def test_normalize_unsigned_by_max_signed_minmax():
    h = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    assert torch.allclose(_fooling.normalize(h, signed=False), h / 4)
    s = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]])
    assert torch.allclose(_fooling.normalize(s, signed=True), (s + 2) / 4)
    assert torch.equal(_fooling.normalize(torch.zeros(1, 2, 2), signed=False), torch.zeros(1, 2, 2))


def test_topk_penalty_known_answer():
    original = torch.arange(10.0).view(1, 2, 5)  # top 20 %: cells 9 and 8
    chosen = _fooling.topk_cells(original, 0.2)
    assert chosen.flatten().nonzero().flatten().tolist() == [8, 9]
    h = torch.zeros(1, 2, 5)
    h[0, 1, 3], h[0, 1, 4], h[0, 0, 0] = 0.5, 1.0, 1.0  # the cell outside P does not count
    assert _fooling.topk_penalty(h, chosen).item() == pytest.approx((0.25 + 1.0) / 2)


def test_center_of_mass_and_penalty_known_answers():
    h = torch.zeros(2, 5, 5)
    h[0, 1, 3] = 1.0
    h[1, 4, 0], h[1, 4, 4] = 1.0, 3.0
    centre = _fooling.center_of_mass(h)
    assert centre.tolist() == [[1.0, 3.0], [4.0, 3.0]]
    assert _fooling.center_of_mass(torch.zeros(1, 5, 5)).tolist() == [[2.0, 2.0]]
    original = torch.tensor([[0.0, 0.0], [4.0, 3.0]])
    # −mean of L1 distances: (1 + 3) and 0
    assert _fooling.center_mass_penalty(h, original).item() == pytest.approx(-2.0)


def test_active_penalty_known_answer():
    a, b = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    assert _fooling.active_penalty(b, a, a, b).item() == 0.0  # maps already swapped
    assert _fooling.active_penalty(a, b, a, b).item() == pytest.approx(1.0)  # not swapped


# -- validation ---------------------------------------------------------------------------------


def _suite(tmp_path, attack: str, data: str = "{source: builtin:shapes, n: 4, batch_size: 4}"):
    path = tmp_path / "suite.yaml"
    path.write_text("\n".join(["name: manip", "seed: 3", "device: cpu", "model: {source: builtin:shapes-resnet}",
                               f"data: {data}", "explainers: [gradcam]", "attacks:", "  - none",
                               f"  - {attack}", "metrics: [spearman, agreement, {fsr: {resolution: 8}}]", ""]))
    return path


@pytest.mark.parametrize("attack, needle", [
    ("manipulation: {target: rise}", "has no differentiable map"),
    ("manipulation: {target: smoothgrad}", "has no differentiable map"),
    ("manipulation: {target: gradcm}", "gradcam"),
    ("manipulation: {target: gradcam, target_params: {layr: x}}",
     "target_params are not valid gradcam parameters: layr: unknown parameter"),
    ("manipulation: {target: saliency, target_params: {output: odds}}",
     "target_params are not valid saliency parameters: output: Input should be"),
    ("manipulation: {fooling: sideways}", "fooling"),
])
def test_bad_parameters_are_refused_at_their_line(tmp_path, attack, needle):
    path = _suite(tmp_path, attack)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    problems = err.value.problems
    assert len(problems) == 1 and problems[0].startswith(f"{path}:9: ") and needle in problems[0]


def test_cli_validate_exits_2_on_a_non_differentiable_target(tmp_path):
    from typer.testing import CliRunner

    from audit.cli import app

    path = _suite(tmp_path, "manipulation: {target: rise}")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and f"{path}:9:" in result.output and "Traceback" not in result.output


# -- fine-tuning --------------------------------------------------------------------------------


def _ctx(training=None, seed=5, report=None):
    return AttackContext(TINY_SPEC, seed=seed, training=training or tiny_training_set(n=64), report=report)


def _held_out_penalty(attack, model, reference, x):
    explainer = attack.target_explainer()
    with torch.no_grad():
        target = reference(x).argmax(dim=1)
    return float(attack.penalty(explainer, model, reference, x, target).detach())


@pytest.mark.parametrize("fooling, target", [("location", "gradcam"), ("topk", "gradcam"),
                                             ("center_mass", "gradcam"), ("location", "saliency"),
                                             ("location", "lrp")])
def test_fine_tuning_lowers_the_penalty_and_leaves_the_base_and_batchnorm_alone(fooling, target):
    model = tiny_model()
    before = model_fingerprint(model)
    steps = []
    extra = {"target_params": {"composite": "epsilon"}} if target == "lrp" else {}
    attack = Manipulation(fooling=fooling, target=target, lam=10.0, lr=1e-2, steps=25, batch_size=16, **extra)
    fooled = attack.prepare(model, _ctx(report=lambda s, t, v: steps.append((s, t, sorted(v)))))
    # the audited model is untouched
    after = model_fingerprint(model)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert before["modes"] == after["modes"]
    # BatchNorm's running statistics are the original's (frozen), the weights moved
    state, original = fooled.state_dict(), model.state_dict()
    buffers = [k for k in state if "running_" in k or "num_batches_tracked" in k]
    assert buffers and all(torch.equal(state[k], original[k]) for k in buffers)
    assert any(not torch.equal(state[k], original[k]) for k in state if k not in buffers)
    # progress was reported every step, and the penalty fell on images it never trained on
    assert steps == [(s, 25, ["ce", "penalty"]) for s in range(1, 26)]
    x = tiny_inputs(batch=16, seed=11)
    assert _held_out_penalty(attack, fooled, model, x) < _held_out_penalty(attack, model, model, x)
    curves = fooled.manipulation_curves
    assert len(curves["penalty"]) == 25
    torch.testing.assert_close(curves["loss"], curves["ce"] + 10.0 * curves["penalty"], rtol=1e-6, atol=1e-6)


def test_gradcam_loss_lives_on_the_layer_grid():
    model = tiny_model()
    attack = Manipulation()
    maps = attack.loss_maps(attack.target_explainer(), model, tiny_inputs(batch=2), torch.tensor([0, 1]))
    assert tuple(maps.shape) == (2, 8, 8)  # TinyResNet's block halves 16×16
    assert maps.amax(dim=(1, 2)).allclose(torch.ones(2))
    pooled = Manipulation(target="saliency", resolution=4)
    assert tuple(pooled.loss_maps(pooled.target_explainer(), model, tiny_inputs(batch=2),
                                  torch.tensor([0, 1])).shape) == (2, 4, 4)


def test_export_import_round_trip_keeps_weights_and_curves():
    model = tiny_model()
    attack = Manipulation(steps=3, batch_size=4)
    fooled = attack.prepare(model, _ctx())
    state = attack.export_state(fooled)
    assert {CURVE_PREFIX + c for c in ("ce", "penalty", "loss")} <= set(state)
    rebuilt = attack.import_state(model, {k: v.clone() for k, v in state.items()})
    x = tiny_inputs(batch=4)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), fooled(x))
    for name, values in fooled.manipulation_curves.items():
        assert torch.equal(rebuilt.manipulation_curves[name], values)
    summary = attack.state_summary(state)
    assert summary["penalty"]["values"] == pytest.approx(fooled.manipulation_curves["penalty"].tolist(), abs=1e-6)
    json.dumps(summary)


def test_training_is_deterministic_and_seeded():
    model = tiny_model()
    attack = Manipulation(steps=2, batch_size=4)
    a, b = attack.prepare(model, _ctx(seed=5)), attack.prepare(model, _ctx(seed=5))
    c = attack.prepare(model, _ctx(seed=6))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_active_fooling_trains_on_pairs_with_ce_on_ordinary_shapes(monkeypatch):
    model = tiny_model(num_classes=6)
    drawn = []
    draw = TrainingSet.draw

    def spy(self, size, seed, *identity, among=None):
        batch = draw(self, size, seed, *identity, among=among)
        drawn.append((type(self.dataset).__name__, identity[0], batch.labels))
        return batch

    monkeypatch.setattr(TrainingSet, "draw", spy)
    pairs = TrainingSet(PairsData("train", 32, TINY_SPEC.size))
    attack = Manipulation(fooling="active", steps=2, batch_size=4)
    fooled = attack.prepare(model, _ctx(training=pairs))
    kinds = {(kind, purpose) for kind, purpose, _ in drawn}
    assert kinds == {("PairsData", "manipulation-fool"), ("ShapesData", "manipulation-ce")}
    assert all((labels >= 0).all() for kind, _, labels in drawn if kind == "ShapesData")
    assert len(fooled.manipulation_curves["penalty"]) == 2
    # the same from ordinary shapes training data: the pairs come from the same split
    drawn.clear()
    attack.prepare(model, _ctx(training=TrainingSet(ShapesData("train", 32, TINY_SPEC.size))))
    assert {(k, p) for k, p, _ in drawn} == kinds
    # other training data cannot be used for active fooling
    with pytest.raises(ValueError, match="only builtin:shapes and builtin:shapes-pairs"):
        attack.prepare(model, _ctx())


def test_active_penalty_uses_the_original_models_maps_of_the_other_class():
    model = tiny_model(num_classes=6)
    attack = Manipulation(fooling="active")
    explainer = attack.target_explainer()
    x = tiny_inputs(batch=3)
    c1, c2 = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    # for w = w₀, the penalty is ½[MSE(h_c1, h_c2) + MSE(h_c2, h_c1)] = MSE(h_c1, h_c2)
    h1 = attack.loss_maps(explainer, model, x, c1, create_graph=False)
    h2 = attack.loss_maps(explainer, model, x, c2, create_graph=False)
    got = attack.penalty(explainer, model, model, x, c1, c2)
    assert got.item() == pytest.approx(torch.mean((h1 - h2) ** 2).item(), rel=1e-5)


def test_engine_caches_the_fine_tuned_state_and_records_its_curves(tmp_path):
    from audit.engine.run import run_suite

    path = _suite(tmp_path, "manipulation: {steps: 2, batch_size: 4}")
    cache = tmp_path / "cache"
    result = run_suite(load_suite(path), tmp_path / "out", cache_dir=cache)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    curves = manifest["prepared"]["manipulation"]
    assert len(curves["ce"]["values"]) == 2 and len(curves["penalty"]["values"]) == 2
    assert "prepare manipulation" in manifest["timings_s"]
    assert result.exit_code == 0
    # a second run imports the cached state: same curves, no training
    again = Runner(load_suite(path), Cache(cache))
    again.preparation.prepare_all()
    assert again.preparation.summaries()["manipulation"] == curves


def test_penalties_at_the_original_weights_agree_with_independent_formulas():
    model = tiny_model()
    x, target = tiny_inputs(batch=4), torch.tensor([0, 1, 2, 3])
    attack = Manipulation(fooling="topk", topk_fraction=0.1)
    explainer = attack.target_explainer()
    h = attack.loss_maps(explainer, model, x, target, create_graph=False)  # (4, 8, 8), max 1
    k = round(0.1 * 64)
    expected = (h.flatten(1).topk(k, dim=1).values ** 2).mean()  # the top cells of w₀'s own map
    assert attack.penalty(explainer, model, model, x, target).item() == pytest.approx(expected.item(), rel=1e-5)
    centre = Manipulation(fooling="center_mass")
    assert centre.penalty(explainer, model, model, x, target).item() == pytest.approx(0.0, abs=1e-5)
    location = Manipulation(fooling="location")
    frame = torch.ones(8, 8)
    frame[1:7, 1:7] = 0
    assert location.penalty(explainer, model, model, x, target).item() == pytest.approx(
        ((h - frame) ** 2).mean().item(), rel=1e-5)


# -- calibration: the Grad-CAM ReLU leak (gradient only) ------------------------------------------


def test_leaky_relu_gradient_keeps_the_value_and_leaks_the_gradient():
    z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    out = _fooling.leaky_relu_gradient(z, 0.3)
    assert torch.equal(out.detach(), torch.relu(z.detach()))
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert grad.tolist() == pytest.approx([0.3, 0.3, 0.3, 1.0, 1.0])
    (plain,) = torch.autograd.grad(_fooling.leaky_relu_gradient(z, 0.0).sum(), z)
    assert plain.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_the_location_penalty_reaches_relu_cut_frame_cells_only_with_the_leak():
    """The failure the leak fixes: a frame cut to zero by Grad-CAM's ReLU gets no gradient, so
    fine-tuning could never light it up (measured: every circle and ring image unfooled)."""
    z = torch.full((1, 8, 8), -1.0)
    z[0, 3:5, 3:5] = 2.0  # the object's cells, positive; the whole frame is cut
    frame = _fooling.frame(8, 8).bool()

    def frame_gradient(slope):
        zz = z.clone().requires_grad_(True)
        h = _fooling.normalize(_fooling.leaky_relu_gradient(zz, slope), signed=False)
        (grad,) = torch.autograd.grad(_fooling.location_penalty(h), zz)
        return grad[0][frame]

    assert torch.count_nonzero(frame_gradient(0.0)) == 0
    leaked = frame_gradient(1.0)
    assert (leaked < 0).all()  # descending the penalty raises every frame cell


def test_manipulation_loss_maps_are_plain_grad_cam_in_value_whatever_the_slope():
    from audit.explainers.gradcam import differentiable_gradcam

    model, x, target = tiny_model(), tiny_inputs(batch=4), torch.tensor([0, 1, 2, 3])
    expected = differentiable_gradcam(model, x.clone().requires_grad_(True), target, None, False, upsample=False)
    expected = expected / (expected.flatten(1).amax(1).view(-1, 1, 1) + _fooling.EPS)
    for slope in (0.0, 1.0):
        attack = Manipulation(relu_slope=slope)
        got = attack.loss_maps(attack.target_explainer(), model, x, target, create_graph=False)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_defaults_are_the_calibrated_location_settings():
    """suites/full.yaml's cell and suites/manipulation.yaml's gradcam_location rely on them."""
    p = Manipulation().params
    assert (p.fooling, p.target, p.lam, p.lr, p.steps, p.batch_size, p.schedule, p.relu_slope) == (
        "location", "gradcam", 10.0, 1e-3, 300, 8, "cosine", 1.0)


def _gradcam_fsr(model, fooled, x, fooling):
    from audit.explainers.base import EXPLAINERS, ExplainContext
    from audit.metrics.base import MetricInputs
    from audit.metrics.fsr import FSR

    with torch.no_grad():
        target = model(x).argmax(1)
        predicted = fooled(x).argmax(1)
    explainer, ctx = EXPLAINERS.create("gradcam"), ExplainContext(TINY_SPEC, 0, tuple(range(len(x))))
    clean, attacked = explainer(model, x, target, ctx), explainer(fooled, x, target, ctx)
    inputs = MetricInputs(TINY_SPEC, x, x, model, fooled, target, torch.full_like(target, -1), target,
                          predicted, clean, attacked, sample_ids=tuple(range(len(x))))
    values = FSR(fooling=fooling, resolution=8).compute(inputs).values
    return float(values.nan_to_num(0.0).mean())


@pytest.mark.parametrize("fooling", ["location", "topk"])
def test_a_short_fine_tuning_raises_grad_cam_fsr_on_held_out_images(fooling):
    """The calibration in miniature: FSR on images the fine-tuning never saw goes from 0 (the
    original model; images whose clean map already passes count 0) to most of them."""
    model = tiny_model()
    x = tiny_inputs(batch=32, seed=11)
    attack = Manipulation(fooling=fooling, lam=10.0 if fooling == "location" else 3.0, lr=1e-2, steps=30,
                          batch_size=16)
    fooled = attack.prepare(model, _ctx())
    assert _gradcam_fsr(model, model, x, fooling) == 0.0
    assert _gradcam_fsr(model, fooled, x, fooling) >= 0.5


def test_the_attack_passes_its_relu_slope_to_the_penalty_gradient():
    model = tiny_model()
    x, target = tiny_inputs(batch=4), torch.tensor([0, 1, 2, 3])
    fooled = copy.deepcopy(model).requires_grad_(True)

    def gradient(slope):
        attack = Manipulation(relu_slope=slope)
        penalty = attack.penalty(attack.target_explainer(), fooled, model, x, target)
        return torch.autograd.grad(penalty, fooled.fc.weight)[0]

    cam = Manipulation().loss_maps(Manipulation().target_explainer(), model, x, target, create_graph=False)
    assert (cam == 0).any()  # some cells are ReLU-cut, so the leak must change the gradient
    assert not torch.allclose(gradient(0.0), gradient(1.0))


def test_an_lrp_target_must_be_the_lrp_map_the_audit_scores():
    """lrp's differentiable map is LRP-epsilon: targeting the default EpsilonPlusFlat composite
    would train against one map and score another, so it is refused at validation."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="composite: epsilon"):
        Manipulation(target="lrp")
    Manipulation(target="lrp", target_params={"composite": "epsilon"})
