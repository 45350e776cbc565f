"""The user's own model and data, and every kind of bad input: one line, exit 2, nothing written."""

import json
import pickle
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
INPUT = "input: {size: 64, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"


def make_folder(root: Path, classes=("cat", "dog"), per_class=3, size=(80, 70)) -> Path:
    gen = torch.Generator().manual_seed(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (torch.rand(size[1], size[0], 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / c / f"{i}.jpg" if i % 2 else root / c / f"{i}.png")
    return root


def write_suite(tmp_path: Path, model: str, data: str, extra: str = "", n: int = 4) -> Path:
    text = "\n".join([
        "name: user", "seed: 1", "device: cpu",
        "model:", textwrap.indent(model, "  "),
        "data:", textwrap.indent(data, "  "), f"  n: {n}", "  batch_size: 3",
        "explainers: [saliency]",
        "attacks: [none, {gaussian_noise: {sigma: 0.1}}]",
        "metrics: [spearman, accuracy, agreement]", extra, ""])
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def run(explain_audit, cli_env, suite: Path, out: Path, *extra: str):
    return subprocess.run([*explain_audit, "run", str(suite), "--out", str(out), "-q", *extra],
                          capture_output=True, text=True, env=cli_env, timeout=600)


def assert_bad_input(proc, out: Path, needle: str):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_torchvision_resnet18_on_an_image_folder_end_to_end(tmp_path, explain_audit, cli_env):
    torch.manual_seed(0)
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), weights)
    make_folder(tmp_path / "images")
    suite = write_suite(tmp_path, f"source: torchvision:resnet18\nweights: r18.pt\n{INPUT}",
                        "source: folder:images")
    out = tmp_path / "out"
    proc = run(explain_audit, cli_env, suite, out)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 3 * 4 and all(r["status"] in ("ok", "degenerate") for r in records)
    # ids are stable file indices; labels come from folder names in sorted order
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["input"]["size"] == 64
    assert "2 classes" in manifest["data"]["description"]


@pytest.mark.slow
def test_same_suite_twice_gives_identical_summary(tmp_path, explain_audit, cli_env):
    suite = ROOT / "suites" / "quick.yaml"
    a, b = tmp_path / "a", tmp_path / "b"
    # no cache: the second run must compute everything again, not read the first one's cells
    assert run(explain_audit, cli_env, suite, a, "--cache", "none").returncode == 0
    assert run(explain_audit, cli_env, suite, b, "--cache", "none").returncode == 0
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
    assert (a / "results.jsonl").read_text() == (b / "results.jsonl").read_text()


class _Evil:
    def __reduce__(self):
        return (Path.write_text, (Path(_Evil.marker), "pwned"))


@pytest.mark.parametrize("case", ["pickle", "wrong-arch", "nan", "classes", "3d", "empty-folder",
                                  "corrupt-jpeg", "n-too-big", "not-a-state-dict"])
def test_bad_user_artefacts(tmp_path, explain_audit, cli_env, case):
    shapes = "source: builtin:shapes"
    (tmp_path / "weird.py").write_text(textwrap.dedent("""
        import torch
        class Out(torch.nn.Module):
            def __init__(self, fn):
                super().__init__(); self.fn = fn; self.p = torch.nn.Parameter(torch.zeros(1))
            def forward(self, x):
                return self.fn(x) + self.p
        def nan(): return Out(lambda x: torch.full((x.shape[0], 6), float("nan")))
        def three(): return Out(lambda x: x.flatten(1)[:, :3])
        def cube(): return Out(lambda x: x[:, :, :6, 0])
    """))
    shapes_model = "source: builtin:shapes-resnet"
    if case == "pickle":
        _Evil.marker = str(tmp_path / "marker")
        with open(tmp_path / "evil.pt", "wb") as handle:
            pickle.dump({"w": _Evil()}, handle)
        suite = write_suite(tmp_path, f"{shapes_model}\nweights: evil.pt", shapes)
        needle = "refusing to load"
    elif case == "not-a-state-dict":
        torch.save([torch.zeros(1)], tmp_path / "list.pt")
        suite = write_suite(tmp_path, f"{shapes_model}\nweights: list.pt", shapes)
        needle = "not a state_dict"
    elif case == "wrong-arch":
        torch.save(torchvision.models.resnet18(num_classes=6).state_dict(), tmp_path / "r18.pt")
        suite = write_suite(tmp_path, f"{shapes_model}\nweights: r18.pt", shapes)
        needle = "do not fit builtin:shapes-resnet"
    elif case in ("nan", "classes", "3d"):
        fn = {"nan": "nan", "classes": "three", "3d": "cube"}[case]
        suite = write_suite(tmp_path, f"source: import:weird:{fn}\n{INPUT}", shapes)
        needle = {"nan": "NaN or infinite logits", "classes": "6 classes but the model returns 3",
                  "3d": "must return (batch, classes)"}[case]
    elif case == "empty-folder":
        (tmp_path / "images" / "cat").mkdir(parents=True)
        suite = write_suite(tmp_path, shapes_model, "source: folder:images")
        needle = "holds no images"
    elif case == "corrupt-jpeg":
        make_folder(tmp_path / "images", per_class=3)
        # a truncated JPEG outside the n selected images still fails the preflight
        jpeg = tmp_path / "images" / "dog" / "1.jpg"
        jpeg.write_bytes(jpeg.read_bytes()[:200])
        suite = write_suite(tmp_path, shapes_model, "source: folder:images", n=1)
        needle = "1 image(s) cannot be decoded"
    else:
        make_folder(tmp_path / "images", per_class=2)
        suite = write_suite(tmp_path, shapes_model, "source: folder:images", n=50)
        needle = "holds only 4 usable images"
    out = tmp_path / "out"
    assert_bad_input(run(explain_audit, cli_env, suite, out), out, needle)
    if case == "pickle":
        assert not Path(_Evil.marker).exists()
