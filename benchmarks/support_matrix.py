"""Which explainer explains which architecture: every explainer on every torchvision classification
model (and a few timm families), writing docs/support.md.

Each cell builds the architecture with random weights (seeded), takes 2 random images at a small
input size the architecture allows, runs the explainer's preflight check
(:meth:`Explainer.check_model`) and then the explainer itself, and records:

- ✓ — ran; the maps are finite, (B, H, W), and the explainer's own map check passed;
- refused: reason — the explainer refused the model up front (exit 2 in a run) or refused the
  maps (e.g. LRP's conservation check: the image would be skipped with the reason);
- ✗ — anything else (an exception): a bug to fix.

Random weights matter for LRP: deep randomly initialised nets (MobileNet, EfficientNet, …) pass
almost no relevance to the input (the stabilisers absorb it), which the conservation check
refuses; a trained model of the same architecture need not be refused.

    OMP_NUM_THREADS=1 python benchmarks/support_matrix.py [--only resnet18,densenet121] [--out docs/support.md]
        [--fresh]

Every finished architecture's row is saved at once to the ``--out`` path with suffix ``.json``
(``docs/support.json``); a run started again reuses the rows it finds there for the same
explainers (``--fresh`` ignores them), so an interrupted matrix resumes where it stopped.
torchvision's ViTs are built at 64 px (56 px for patch 14): their ``image_size`` is a constructor
argument, and at 224 px ViT-H/14 alone took over half an hour of one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from audit.explainers.base import EXPLAINERS, ExplainContext
from audit.spec import InputSpec

# Cheap settings: the matrix asks "does it run correctly", not "is the map good".
PARAMS = {"smoothgrad": {"n_samples": 2}, "integrated_gradients": {"n_steps": 4},
          "rise": {"n_masks": 16}, "mc_rise": {"n_masks": 16}}
# Smallest input each family allows (and that leaves its last feature map larger than 1x1).
SIZES = {"inception_v3": 160, "googlenet": 64, "vit_h_14": 56, "vit": 64, "swin": 64, "maxvit": 224}
TIMM = ["resnet50", "efficientnet_b0", "convnext_tiny", "vit_tiny_patch16_224", "mobilenetv3_small_100",
        "regnety_002", "densenet121", "deit_tiny_patch16_224"]


def input_size(arch: str) -> int:
    if "patch16" in arch and not arch.startswith("vit_"):
        return 64
    if arch.startswith(("vit_tiny", "deit_tiny")):
        return 64
    return next((size for prefix, size in SIZES.items() if arch.startswith(prefix)), 64)


def build(source: str, seed: int = 0, size: int = 224) -> torch.nn.Module:
    scheme, arch = source.split(":", 1)
    torch.manual_seed(seed)
    if scheme == "torchvision":
        import torchvision

        extra = {"image_size": size} if arch.startswith("vit_") else {}  # a constructor argument
        return torchvision.models.get_model(arch, weights=None, num_classes=10, **extra).eval()
    import timm

    extra = {"img_size": size} if "patch16" in arch else {}  # timm's ViTs take any multiple of 16
    return timm.create_model(arch, pretrained=False, num_classes=10, **extra).eval()


def cell(explainer_name: str, model: torch.nn.Module, x: torch.Tensor, spec: InputSpec) -> str:
    explainer = EXPLAINERS.create(explainer_name, PARAMS.get(explainer_name, {}))
    try:
        explainer.check_model(model, x)
    except ValueError as exc:
        return f"refused: {exc}"
    try:
        with torch.no_grad():
            target = model(x).argmax(dim=1)
        maps = explainer(model, x, target, ExplainContext(spec, seed=0, sample_ids=(0, 1)))
    except Exception as exc:  # a crash is what the matrix exists to find
        return f"✗ {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
    if not torch.isfinite(maps).all():
        return "✗ non-finite map"
    problems = [p for p in explainer.map_problems(maps) if p]
    return f"refused: {problems[0]}" if problems else "✓"


def sources(only: list[str] | None) -> list[str]:
    import torchvision

    names = [f"torchvision:{a}" for a in torchvision.models.list_models(module=torchvision.models)]
    try:
        import timm  # noqa: F401

        names += [f"timm:{a}" for a in TIMM]
    except ImportError:
        pass
    if only:
        names = [s for s in names if s.split(":", 1)[1] in only or s in only]
    return names


def matrix(names: list[str], explainers: list[str], log=print, saved: Path | None = None,
           fresh: bool = False) -> dict[str, dict[str, str]]:
    """{source: {explainer: "✓" | "refused: reason" | "✗ ..."}}; with ``saved``, every finished row is
    written there at once and rows already there (for the same explainers) are reused unless
    ``fresh``."""
    done = {}
    if saved is not None and saved.is_file() and not fresh:
        done = {s: r for s, r in json.loads(saved.read_text(encoding="utf-8")).items() if list(r) == explainers}
    rows = {}
    for source in names:
        if source in done:
            rows[source] = done[source]
            continue
        arch = source.split(":", 1)[1]
        size = input_size(arch)
        spec = InputSpec(size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        started = time.perf_counter()
        try:
            model = build(source, size=size)
            x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        except Exception as exc:
            rows[source] = {e: f"✗ build: {type(exc).__name__}: {exc}" for e in explainers}
            continue
        rows[source] = {e: cell(e, model, x, spec) for e in explainers}
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps({**done, **rows}, indent=1, ensure_ascii=False), encoding="utf-8")
        log(f"{source} ({size}px, {time.perf_counter() - started:.1f} s): "
            + ", ".join(f"{e} {v[:1] if v[:1] in '✓✗' else 'refused'}" for e, v in rows[source].items()))
    return rows


def markdown(rows: dict[str, dict[str, str]], explainers: list[str]) -> str:
    values = [v for row in rows.values() for v in row.values()]
    ok, bad = sum(v == "✓" for v in values), sum(v.startswith("✗") for v in values)
    lines = ["# Explainer support by architecture", "",
             "Generated by `benchmarks/support_matrix.py` (random weights, seed 0; 2 images; small inputs). "
             "✓ ran and passed the explainer's checks; *refused* the explainer declined the model or its maps "
             "with the reason below (a run exits 2, or skips the image with the reason); ✗ a bug.", "",
             f"**{ok} ✓, {len(values) - ok - bad} refused, {bad} ✗** over {len(rows)} architectures × "
             f"{len(explainers)} explainers.", "",
             "| architecture | " + " | ".join(explainers) + " |", "|---|" + "---|" * len(explainers)]
    reasons: dict[str, int] = {}
    for source, row in rows.items():
        shown = []
        for e in explainers:
            v = row[e]
            if v == "✓" or v.startswith("✗"):
                shown.append(v.replace("|", "\\|"))
            else:
                key = v.removeprefix("refused: ")
                shown.append(f"refused ({reasons.setdefault(key, len(reasons) + 1)})")
        lines.append(f"| {source} | " + " | ".join(shown) + " |")
    if reasons:
        lines += ["", "## Reasons", ""]
        lines += [f"{n}. {reason.replace('|', '/')}" for reason, n in reasons.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated architecture names")
    parser.add_argument("--out", default="docs/support.md")
    parser.add_argument("--fresh", action="store_true", help="ignore the rows saved by an earlier run")
    args = parser.parse_args()
    explainers = [name for name, _ in EXPLAINERS]
    rows = matrix(sources(args.only.split(",") if args.only else None), explainers,
                  saved=Path(args.out).with_suffix(".json"), fresh=args.fresh)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(rows, explainers), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
