"""The ``explain-audit`` command line.

Exit codes: 0 every gate passes; 1 a gate failed; 2 usage, configuration or bad input (one line
per problem, nothing written); 3 the run is incomplete (a cell errored).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from audit.engine.threads import quiet_openmp_waits, resolve_threads, use_threads
from audit.errors import EXIT_USAGE, SuiteError, UserError

# Before anything imports torch: OpenMP reads its wait policy once, when it loads. Passive waits
# keep two audits on one machine from spinning on each other's cores; a user's own setting wins.
quiet_openmp_waits()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit saliency explainers of PyTorch image classifiers: can they be fooled?")


def _threads_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--threads", metavar="N", help="CPU threads to compute with (default: "
                        "$OMP_NUM_THREADS if set, else the physical cores this process may use); --workers "
                        "processes share them")


def _fail(exc: UserError) -> None:
    lines = exc.problems if isinstance(exc, SuiteError) else [f"error: {exc}"]
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(EXIT_USAGE)


@app.command()
def run(
    suite: Path = typer.Argument(..., help="the suite YAML file, e.g. suites/smoke.yaml"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default reports/<suite name>)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress on stderr"),
    cache: Optional[str] = typer.Option(None, "--cache", help="cache folder (default $EXPLAIN_AUDIT_CACHE "
                                        "or ~/.cache/explain-audit); 'none' disables it"),
    workers: int = typer.Option(1, "--workers", help="local worker processes"),
    backend: str = typer.Option("local", "--backend", help="local or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (with --backend ray)"),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help="Ray num_gpus per task"),
    threads: Optional[str] = _threads_option(),
) -> None:
    """Run every cell of a suite and write results.jsonl, summary.csv, report.md, manifest.json."""
    from audit.engine.cache import default_cache_dir
    from audit.engine.progress import Progress
    from audit.engine.run import run_suite
    from audit.engine.suite import load_suite

    try:
        budget = resolve_threads(threads)
        use_threads(budget)
        loaded = load_suite(suite)
        for line in loaded.warnings:
            typer.echo(line, err=True)
        target = out if out is not None else Path("reports") / loaded.suite.name
        cache_dir = default_cache_dir() if cache is None else (None if cache.lower() == "none" else Path(cache))
        result = run_suite(loaded, target, Progress(quiet=quiet), cache_dir=cache_dir, workers=workers,
                           backend=backend, address=address, gpus_per_task=gpus_per_task, threads=budget)
    except UserError as exc:
        _fail(exc)
        return
    failed = [g for g in result.gates if not g.passed]
    for gate in result.gates:
        typer.echo(f"gate {'pass' if gate.passed else 'FAIL'}: {gate.label} — {gate.message}")
    errors = sum(1 for r in result.records if r["status"] == "error")
    if errors:
        typer.echo(f"{errors} record(s) errored; see the report's 'Skipped and failed cells'")
    typer.echo(f"report: {target / 'report.md'}")
    typer.echo(f"report.html: {(target / 'report.html').resolve()}")
    typer.echo(f"junit.xml: {target / 'junit.xml'}")
    from audit.report.writer import append_step_summary

    append_step_summary((target / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"{len(result.summary)} cells, {len(result.gates) - len(failed)}/{len(result.gates)} "
               f"gates passed, exit {result.exit_code}")
    raise typer.Exit(result.exit_code)


def _numbers(option: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise UserError(f"{option} {text!r}: give one number per channel, comma-separated, e.g. 0.5,0.5,0.5")
    return values


@app.command()
def check(
    model: str = typer.Option(..., "--model", help="model source as in a suite: builtin:NAME, torchvision:ARCH, "
                              "timm:ARCH, import:pkg.module:callable, torchscript:PATH, export:PATH.pt2"),
    weights: Optional[str] = typer.Option(None, "--weights", help="state_dict file for the model"),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="input side in pixels (with --mean, --std)"),
    mean: Optional[str] = typer.Option(None, "--mean", help="per-channel mean, e.g. 0.485,0.456,0.406"),
    std: Optional[str] = typer.Option(None, "--std", help="per-channel std, e.g. 0.229,0.224,0.225"),
    data: str = typer.Option(..., "--data", help="images as in a suite: builtin:shapes, folder:PATH (ImageFolder)"),
    split: Optional[str] = typer.Option(None, "--split", help="split of a builtin data source (default test)"),
    n: int = typer.Option(32, "--n", help="images to check on"),
    out: Path = typer.Option(Path("reports/check"), "--out", help="output folder"),
    strict: bool = typer.Option(False, "--strict", help="warn (and skipped) verdicts fail the check too"),
    seed: int = typer.Option(0, "--seed", help="seed of every random choice"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress on stderr"),
    cache: Optional[str] = typer.Option(None, "--cache", help="cache folder, or 'none'"),
    threads: Optional[str] = _threads_option(),
) -> None:
    """Judge one model alone (no original to compare): gating, manipulation, sanity, fragility,
    accuracy, each pass / warn / fail with its figure and 95 % interval; writes verdicts.csv and the
    run's files. Exit 0: no check fails; 1: one fails (or warns, with --strict); 2: bad input;
    3: cells errored. suites/check.yaml is the same check as a suite file."""
    from audit.engine.cache import default_cache_dir
    from audit.engine.check import load_check
    from audit.engine.progress import Progress
    from audit.engine.run import run_suite

    try:
        budget = resolve_threads(threads)
        use_threads(budget)
        model_cfg: dict = {"source": model}
        if weights is not None:
            model_cfg["weights"] = weights
        given = {"--input-size": input_size, "--mean": mean, "--std": std}
        if any(v is not None for v in given.values()):
            missing = [k for k, v in given.items() if v is None]
            if missing:
                raise UserError(f"{', '.join(missing)} missing: give --input-size, --mean and --std together")
            model_cfg["input"] = {"size": input_size, "mean": _numbers("--mean", mean),
                                  "std": _numbers("--std", std)}
        if n < 1:
            raise UserError("--n must be at least 1")
        data_cfg: dict = {"source": data, "n": n, "batch_size": min(n, 32)}
        if split is not None:
            data_cfg["split"] = split
        loaded = load_check(model_cfg, data_cfg, seed=seed)
        cache_dir = default_cache_dir() if cache is None else (None if cache.lower() == "none" else Path(cache))
        result = run_suite(loaded, out, Progress(quiet=quiet), cache_dir=cache_dir, strict=strict, threads=budget)
    except UserError as exc:
        _fail(exc)
        return
    for v in result.verdicts:
        shown = "–" if v.value is None else f"{v.value:.3f}"
        typer.echo(f"{v.verdict.upper():7} {v.check:12} {v.explainer:10} {v.metric} {shown}: {v.reason}")
    typer.echo(f"verdicts: {out / 'verdicts.csv'}")
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo(f"report.html: {(out / 'report.html').resolve()}")
    from audit.report.writer import append_step_summary

    append_step_summary((out / "report.md").read_text(encoding="utf-8"))
    counts = {w: sum(v.verdict == w for v in result.verdicts) for w in ("pass", "warn", "fail", "skipped", "error")}
    typer.echo(", ".join(f"{c} {w}" for w, c in counts.items() if c) + f"; exit {result.exit_code}")
    raise typer.Exit(result.exit_code)


class ExportFormat(str, Enum):
    pt2 = "pt2"
    state_dict = "state_dict"


@app.command("export-attacked")
def export_attacked(
    suite: Path = typer.Argument(..., help="the suite YAML file that defines the attack"),
    attack_id: str = typer.Argument(..., help="the id of an attack that changes the model (gating, manipulation, ...)"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    fmt: ExportFormat = typer.Option(ExportFormat.pt2, "--format", help="pt2: torch.export program (any "
                                     "attacked model; load with source: export:PATH); state_dict: weights for "
                                     "the suite's own model source (attacks that keep the architecture)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress on stderr"),
    cache: Optional[str] = typer.Option(None, "--cache", help="cache folder, or 'none'"),
) -> None:
    """Write an attacked setting's model (prepared, or read from the cache) so that `check` and `run`
    can load it: model.pt2 (source export:DIR/model.pt2) or weights.pt (the suite's source with
    --weights)."""
    from audit.engine.cache import default_cache_dir
    from audit.engine.export import export_attacked_model
    from audit.engine.progress import Progress
    from audit.engine.suite import load_suite

    try:
        loaded = load_suite(suite)
        cache_dir = default_cache_dir() if cache is None else (None if cache.lower() == "none" else Path(cache))
        written = export_attacked_model(loaded, attack_id, out, fmt.value, cache_dir=cache_dir,
                                        log=Progress(quiet=quiet).log)
    except UserError as exc:
        _fail(exc)
        return
    typer.echo(f"wrote {written.path}")
    typer.echo(f"check it: explain-audit check {written.check_args}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="the --out folder of a finished `explain-audit run`")) -> None:
    """Render report.md, junit.xml and report.html again from a run folder's stored results."""
    from audit.engine.render import render_run_dir

    try:
        rendered = render_run_dir(run_dir, step_summary=True)
    except UserError as exc:
        _fail(exc)
        return
    typer.echo(f"report.html: {(run_dir / 'report.html').resolve()}")
    typer.echo(f"{rendered.verdict.headline} ({rendered.verdict.gates_passed}/{rendered.verdict.gates_total} "
               "gates passed)")


@app.command()
def compare(
    base_dir: Path = typer.Argument(..., help="the run to compare against (e.g. the main branch's)"),
    new_dir: Path = typer.Argument(..., help="the run of the change"),
) -> None:
    """Rows whose mean moved (non-overlapping 95 % intervals); exit 1 when a gated row got worse."""
    from audit.report.compare import changes_markdown, compare_runs, regressions
    from audit.report.rundir import load_run

    try:
        base, new = load_run(base_dir), load_run(new_dir)
    except UserError as exc:
        _fail(exc)
        return
    changes, common = compare_runs(base, new)
    typer.echo(changes_markdown(changes, common), nl=False)
    raise typer.Exit(1 if regressions(changes) else 0)


@app.command()
def validate(suite: Path = typer.Argument(..., help="the suite YAML file")) -> None:
    """Check a suite without running it; print every problem as SUITE:LINE: message."""
    from audit.engine.plan import plan_cells
    from audit.engine.suite import load_suite

    try:
        loaded = load_suite(suite)
    except UserError as exc:
        _fail(exc)
        return
    for line in loaded.warnings:
        typer.echo(line, err=True)
    typer.echo(f"{suite}: ok ({len(plan_cells(loaded.suite))} cells, {len(loaded.suite.gates)} gates)")


class Kind(str, Enum):
    explainers = "explainers"
    attacks = "attacks"
    metrics = "metrics"


def _describe_params(params_model) -> list[str]:
    lines = []
    for name, info in params_model.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation)
        annotation = annotation.replace("typing.", "")
        default = "required" if info.is_required() else f"default {info.get_default(call_default_factory=True)!r}"
        desc = f" — {info.description}" if info.description else ""
        lines.append(f"      {name}: {annotation} ({default}){desc}")
    return lines


@app.command("list")
def list_plugins(kind: Optional[Kind] = typer.Argument(None, help="explainers, attacks or metrics")) -> None:
    """List the registered plugins with their capabilities and parameters."""
    from audit.attacks.base import ATTACKS
    from audit.explainers.base import EXPLAINERS
    from audit.metrics.base import METRICS

    registries = {"explainers": EXPLAINERS, "attacks": ATTACKS, "metrics": METRICS}
    try:
        for section, registry in registries.items():
            if kind is not None and kind.value != section:
                continue
            typer.echo(f"{section}:")
            for name, cls in registry:
                typer.echo(f"  {name} — {cls.summary()}")
                caps = ", ".join(f"{k}={v}" for k, v in cls.capabilities().items())
                typer.echo(f"      [{caps}]")
                for line in _describe_params(cls.Params):
                    typer.echo(line)
    except UserError as exc:
        _fail(exc)


@app.command("train-reference")
def train_reference(
    out: Path = typer.Option(Path("shapes_resnet.pt"), "--out", help="where to write the state_dict"),
    epochs: Optional[int] = typer.Option(None, help="override the recipe's epochs"),
    seed: int = typer.Option(0, help="recipe seed"),
) -> None:
    """Retrain builtin:shapes-resnet with the shipped recipe and write its weights."""
    import dataclasses
    import io

    import torch

    from audit.builtin.train_reference import Recipe, evaluate, train

    if out.is_dir():
        _fail(UserError(f"--out {out} is a folder; give a file path such as shapes_resnet.pt"))
    recipe = Recipe(seed=seed)
    if epochs is not None:
        if epochs < 1:
            _fail(UserError("--epochs must be at least 1"))
        recipe = dataclasses.replace(recipe, epochs=epochs)
    model, _ = train(recipe, log=lambda m: typer.echo(m, err=True))
    accuracy = evaluate(model, "test")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    typer.echo(f"test accuracy {accuracy:.4f}; weights written to {out}")


def main() -> None:  # pragma: no cover - console entry point convenience
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
