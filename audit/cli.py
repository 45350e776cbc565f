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

from audit.errors import EXIT_USAGE, SuiteError, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit saliency explainers of PyTorch image classifiers: can they be fooled?")


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
) -> None:
    """Run every cell of a suite and write results.jsonl, summary.csv, report.md, manifest.json."""
    from audit.engine.cache import default_cache_dir
    from audit.engine.progress import Progress
    from audit.engine.run import run_suite
    from audit.engine.suite import load_suite

    try:
        loaded = load_suite(suite)
        for line in loaded.warnings:
            typer.echo(line, err=True)
        target = out if out is not None else Path("reports") / loaded.suite.name
        cache_dir = default_cache_dir() if cache is None else (None if cache.lower() == "none" else Path(cache))
        result = run_suite(loaded, target, Progress(quiet=quiet), cache_dir=cache_dir, workers=workers,
                           backend=backend, address=address, gpus_per_task=gpus_per_task)
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
