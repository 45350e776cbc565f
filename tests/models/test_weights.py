"""Users' weight files as they are saved in practice (audit.models.weights, audit.models.sources)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from audit.errors import UserError
from audit.models.sources import load_model
from audit.models.weights import StateNotes, classifier_classes, classifier_key, read_state_dict


class Small(nn.Module):
    """Conv + BN + linear classifier: every kind of tensor a state_dict carries."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def small(classes: int = 3) -> nn.Module:
    torch.manual_seed(7)
    model = Small(classes)
    model.bn.running_mean.uniform_(-0.5, 0.5)  # distinguishable from a fresh model's buffers
    return model.eval()


def cfg(source: str, weights: str | None = None, **extra) -> SimpleNamespace:
    given = SimpleNamespace(size=8, mean=[0.5] * 3, std=[0.25] * 3) if source.startswith("import:") else None
    values = {"source": source, "weights": weights, "input": given, "num_classes": None, "output": None}
    values.update(extra)
    return SimpleNamespace(**values)


def resolver(folder: Path):
    return lambda p: folder / p


def test_unwrapped_prefixed_and_partial_files_load_to_the_same_logits(tmp_path):
    reference = small()
    state = reference.state_dict()
    x = torch.rand(2, 3, 8, 8)
    variants = {
        "plain": state,
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
        "both": {f"module._orig_mod.{k}": v for k, v in state.items()},
        "checkpoint": {"epoch": 3, "model_state_dict": state, "optimizer": {"lr": 0.1}},
        "lightning": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "global_step": 9},
        "no-nbt": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
    }
    for name, saved in variants.items():
        torch.save(saved, tmp_path / f"{name}.pt")
        notes = StateNotes()
        loaded = read_state_dict(tmp_path / f"{name}.pt", notes)
        model = Small()
        from audit.models.weights import apply_state_dict

        apply_state_dict(model, loaded, name, "Small", notes)
        with torch.no_grad():
            assert torch.equal(model.eval()(x), reference(x)), name  # same weights, same computation
        said = " ".join(notes.lines)
        if name in ("checkpoint", "lightning"):
            assert ("'model_state_dict'" if name == "checkpoint" else "'state_dict'") in said
        if name in ("dataparallel", "compiled", "both", "lightning"):
            assert "stripped the key prefix" in said
        if name == "both":
            assert "module._orig_mod." in said
        if name == "no-nbt":
            assert "num_batches_tracked" in said
        if name == "plain":
            assert notes.lines == []


def test_a_prefix_only_some_keys_carry_is_kept(tmp_path):
    state = small().state_dict()
    mixed = {("module." + k if k.startswith("conv") else k): v for k, v in state.items()}
    torch.save(mixed, tmp_path / "mixed.pt")
    assert set(read_state_dict(tmp_path / "mixed.pt")) == set(mixed)


def test_mismatch_lists_missing_and_unexpected_keys_whole(tmp_path):
    state = small().state_dict()
    renamed = {k.replace("fc.", "head.a_rather_long_classifier_module_name."): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(UserError) as info:
        load_model(cfg("import:tests.models.test_weights:Small", "renamed.pt"), resolver(tmp_path), torch.device("cpu"))
    message = str(info.value)
    assert "missing 2: fc.weight, fc.bias" in message
    assert ("unexpected 2: head.a_rather_long_classifier_module_name.weight, "
            "head.a_rather_long_classifier_module_name.bias") in message
    assert "\n" not in message


def test_shape_mismatch_is_named(tmp_path):
    torch.save(small(5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(UserError, match=r"shape differs .*fc.weight \(5, 4\) vs \(3, 4\)"):
        load_model(cfg("import:tests.models.test_weights:Small", "five.pt"), resolver(tmp_path), torch.device("cpu"))


def test_torchscript_given_as_weights_says_use_torchscript(tmp_path):
    torch.jit.save(torch.jit.script(small()), tmp_path / "scripted.pt")
    with pytest.raises(UserError, match="is a TorchScript model.*use source: torchscript:"):
        read_state_dict(tmp_path / "scripted.pt")


def test_a_checkpoint_without_a_state_dict_lists_what_it_holds(tmp_path):
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(UserError, match="not a state_dict.*found 'epoch', 'lr'"):
        read_state_dict(tmp_path / "meta.pt")


@pytest.mark.parametrize("arch,classes", [("resnet18", 7), ("squeezenet1_1", 5)])
def test_class_count_read_from_linear_and_conv_classifiers(tmp_path, arch, classes):
    torch.manual_seed(0)
    trained = torchvision.models.get_model(arch, weights=None, num_classes=classes).eval()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded = load_model(cfg(f"torchvision:{arch}", "w.pt"), resolver(tmp_path), torch.device("cpu"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = loaded.model(x)
        assert out.shape == (1, classes)
        assert torch.equal(out, trained(x))
    assert f"{classes} classes, read from the weights' classifier" in " ".join(loaded.notes)


def test_classifier_key_finds_the_conv_classifier():
    model = torchvision.models.squeezenet1_1(num_classes=1000)
    assert classifier_key(model, 1000) == "classifier.1.weight"
    assert classifier_classes({"classifier.1.weight": torch.zeros(9, 512, 1, 1)}, "classifier.1.weight") == 9


def test_num_classes_setting_wins_and_a_wrong_one_is_a_mismatch(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match="with 6 classes: shape differs"):
        load_model(cfg("torchvision:resnet18", "w.pt", num_classes=6), resolver(tmp_path), torch.device("cpu"))


@pytest.mark.parametrize("source", ["torchvision:resnet18", "import:tests.models.test_weights:Small"])
def test_random_init_is_tied_to_the_suite_seed(tmp_path, source):
    before = torch.random.get_rng_state()
    a = load_model(cfg(source), resolver(tmp_path), torch.device("cpu"), seed=3)
    torch.rand(5)  # whatever the process drew in between
    b = load_model(cfg(source), resolver(tmp_path), torch.device("cpu"), seed=3)
    c = load_model(cfg(source), resolver(tmp_path), torch.device("cpu"), seed=4)
    assert a.digest == b.digest
    assert a.digest != c.digest
    torch.random.set_rng_state(before)
    load_model(cfg(source), resolver(tmp_path), torch.device("cpu"), seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched


def test_timm_source_seeded_and_with_weights(tmp_path):
    timm = pytest.importorskip("timm")
    a = load_model(cfg("timm:test_resnet"), resolver(tmp_path), torch.device("cpu"), seed=1)
    b = load_model(cfg("timm:test_resnet"), resolver(tmp_path), torch.device("cpu"), seed=1)
    assert a.digest == b.digest
    assert a.spec.mean == tuple(a.model.pretrained_cfg["mean"])
    trained = timm.create_model("test_resnet", num_classes=11).eval()
    torch.save({"model": trained.state_dict()}, tmp_path / "w.pth")
    loaded = load_model(cfg("timm:test_resnet", "w.pth"), resolver(tmp_path), torch.device("cpu"))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), trained(x))
    assert any("'model' entry" in n for n in loaded.notes)


@pytest.mark.parametrize("content", [b"hello\n", b"\x89PNG\r\n\x1a\n", b"{}"])
def test_a_file_that_is_not_a_torch_file_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
