"""The suite file: schema, loading and validation with ``SUITE:LINE: message`` problems.

The schema is a contract other tools rely on (issue A). Every problem found is reported, not
just the first: YAML syntax, unknown keys, wrong types, unknown plugins (with a suggestion),
plugin parameters, duplicate ids, gates that name nothing the suite computes, and files that
do not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator, model_validator

from audit.engine.yaml_lines import YamlProblem, line_of, load_with_lines
from audit.errors import SuiteError, UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(Strict):
    size: int = Field(gt=0)
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> InputConfig:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one "
                             "per channel in both")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std value must be > 0")
        return self


class ModelConfig(Strict):
    source: str
    weights: str | None = None
    input: InputConfig | None = None
    num_classes: int | None = Field(default=None, gt=0)
    # what forward returns; None: logits, and preflight refuses (probabilities / log-probabilities)
    output: Literal["logits", "probabilities", "log_probabilities"] | None = None


class TrainDataConfig(Strict):
    """``data.train``: the images plugins that train (``needs_training_data``) learn from.

    Never the audited images: a ``folder:`` source must not be the audited folder, and a
    builtin source must use another split. ``n`` absent: every image of the source; how many
    the plugin draws (steps x batch size) is the plugin's parameter.
    """

    source: str
    split: str = "train"
    n: int | None = Field(default=None, gt=0)
    labels: dict[str, int] | None = None
    max_corrupt: int = Field(default=0, ge=0)
    resize: Literal["crop", "pad", "stretch"] = "crop"
    exif: Literal["ignore", "apply"] = "ignore"


class DataConfig(Strict):
    source: str
    split: str = "test"
    n: int = Field(default=32, gt=0)
    batch_size: int = Field(default=32, gt=0)
    labels: dict[str, int] | None = None
    max_corrupt: int = Field(default=0, ge=0)
    resize: Literal["crop", "pad", "stretch"] = "crop"  # how images fit the square input (audit.data.images)
    exif: Literal["ignore", "apply"] = "ignore"  # EXIF orientation: as torchvision's ImageFolder, or upright
    train: TrainDataConfig | None = None

    def training(self) -> TrainDataConfig | None:
        """``train:`` as given, else the default (builtin sources: same source, split ``train``),
        else None (a ``folder:`` source has no default)."""
        if self.train is not None:
            return self.train
        if self.source.startswith("builtin:"):
            return TrainDataConfig(source=self.source, split="train")
        return None


class PluginItem(Strict):
    """``name`` or ``{name: {params}}`` with an optional ``id:`` key, normalised.

    A metric may also say where it is computed: ``attacks: [ids]`` and ``explainers: [ids]``
    (default: under every attack, for every explainer), so a suite such as ``suites/check.yaml``
    does not pay for cells nobody reads (a faithfulness curve of the randomised model)."""

    id: str
    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)
    attacks: list[str] | None = Field(default=None, min_length=1)
    explainers: list[str] | None = Field(default=None, min_length=1)

    def applies(self, attack: str | None = None, explainer: str | None = None) -> bool:
        """Whether this (metric) item is computed under ``attack`` for ``explainer`` (None: any)."""
        return ((attack is None or self.attacks is None or attack in self.attacks)
                and (explainer is None or self.explainers is None or explainer in self.explainers))

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"id": value, "plugin": value, "params": {}}
        if not isinstance(value, dict):
            raise ValueError("an item is a plugin name or a mapping {plugin-name: {params}}")
        if set(value) >= {"plugin"}:  # already normalised (e.g. from a manifest)
            return value
        names = [k for k in value if k not in ("id", "attacks", "explainers")]
        if len(names) != 1:
            raise ValueError("an item names exactly one plugin: {plugin-name: {params}}, optionally "
                             f"with id:; got keys {', '.join(map(str, value)) or 'none'}")
        name = names[0]
        params = value[name]
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValueError(f"the parameters of {name!r} must be a mapping, e.g. {name}: {{key: value}}")
        out = {"id": value.get("id", name), "plugin": name, "params": params}
        out.update({k: value[k] for k in ("attacks", "explainers") if k in value})
        return out

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if value in ("", "-", "*") or not re.fullmatch(r"[A-Za-z0-9_.:+-]+", value):
            raise ValueError(f"id {value!r} must be letters, digits and _ . : + - (not '-' or '*')")
        return value


class Gate(Strict):
    """Bounds on matching summary rows. ``check: mean`` (default) bounds the mean; ``check:
    interval`` asks the whole 95 % interval to lie within the bounds (``min`` is checked against
    ``ci_low``, ``max`` against ``ci_high``): the gate passes only when the data rule out the
    other side. (Not ``on:``, which YAML 1.1 reads as the boolean true.)"""

    metric: str
    attack: str = "*"
    explainer: str = "*"
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None
    check: Literal["mean", "interval"] = "mean"

    @model_validator(mode="after")
    def _bounds(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min:, max: or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class CheckRule(Strict):
    """A verdict on summary rows (``explain-audit check``; :mod:`audit.engine.verdicts`): the rows of
    ``metric`` under ``attack`` (one id) for ``explainer`` (an id, ``*`` or ``-``), each judged
    against one bound (``min`` or ``max``) with its 95 % interval: **pass** when the whole interval
    lies on the good side, **fail** when it lies wholly on the bad side (``severity: warn`` makes
    that a warning: a check that only gives context, such as accuracy), **warn** when it holds the
    bound (the data cannot tell at this n)."""

    check: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    metric: str
    attack: str = "none"
    explainer: str = "*"
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None
    severity: Literal["fail", "warn"] = "fail"

    @model_validator(mode="after")
    def _one_bound(self) -> CheckRule:
        if (self.min is None) == (self.max is None):
            raise ValueError("a check has exactly one bound: min: (higher is better) or max: (lower is better)")
        return self

    @property
    def threshold(self) -> float:
        return self.min if self.min is not None else self.max  # type: ignore[return-value]

    @property
    def bound(self) -> Literal["min", "max"]:
        return "min" if self.min is not None else "max"


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    target: Literal["predicted", "label"] = "predicted"
    model: ModelConfig
    data: DataConfig
    explainers: list[PluginItem] = Field(default_factory=list)
    attacks: list[PluginItem] = Field(default_factory=lambda: [PluginItem(id="none", plugin="none")])
    metrics: list[PluginItem] = Field(default_factory=list)
    gates: list[Gate] = Field(default_factory=list)
    checks: list[CheckRule] = Field(default_factory=list)


@dataclass
class LoadedSuite:
    suite: Suite
    path: Path
    # ``SUITE:LINE: warning: ...`` lines: the suite runs, but part of it cannot say anything
    warnings: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the suite resolved against the suite file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.folder / p)


def _format_pydantic(error: dict) -> str:
    msg = error.get("msg", "invalid value")
    if error.get("type") == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    if error.get("type") == "missing":
        return "required key is missing; add it"
    msg = msg.removeprefix("Value error, ")
    return msg


def _loc_path(loc: tuple) -> tuple:
    """Drop pydantic's union/validator tags from an error location."""
    return tuple(part for part in loc if not (isinstance(part, str) and part.startswith("function-")))


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and fully validate a suite; raise :class:`SuiteError` listing every problem."""
    path = Path(path)
    shown = str(path)
    if path.is_dir():
        raise UserError(f"{shown} is a folder; pass the suite's YAML file (e.g. suites/smoke.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"suite file {shown} not found; check the path (suites live in suites/)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read suite file {shown}: {exc}") from None
    try:
        data, lines = load_with_lines(text)
    except YamlProblem as exc:
        raise SuiteError([f"{shown}:{exc.line}: {exc.message}"]) from None
    return validate_suite(data, lines, path, shown)


def validate_suite(data: Any, lines: dict, path: Path, shown: str) -> LoadedSuite:
    """Validate a parsed suite (``lines``: where each key is, from :func:`load_with_lines`; empty
    for a suite built in code, e.g. by ``explain-audit check``); ``path`` resolves relative
    paths (its folder). Raises :class:`SuiteError` listing every problem as ``SHOWN:LINE: ...``."""
    if data is None:
        raise SuiteError([f"{shown}:1: the suite is empty; see suites/smoke.yaml for the form"])
    if not isinstance(data, dict):
        raise SuiteError([f"{shown}:1: a suite is a mapping of keys (name:, model:, data:, ...)"])

    problems: list[tuple[int, str]] = []
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = _loc_path(error["loc"])
            where = ".".join(str(p) for p in loc)
            problems.append((line_of(lines, loc), f"{where}: {_format_pydantic(error)}" if where
                             else _format_pydantic(error)))
        raise SuiteError([f"{shown}:{line}: {msg}" for line, msg in sorted(problems)]) from None

    loaded = LoadedSuite(suite, path)
    problems.extend(_check_plugins(suite, lines))
    problems.extend(_check_hooks(suite, lines))
    if not problems:  # a misspelt plugin would also orphan every gate naming it: report it once
        problems.extend(_check_gates(suite, lines))
        problems.extend(_check_metric_scope(suite, lines))
        problems.extend(_check_checks(suite, lines))
        problems.extend(_check_attack_bases(suite, lines))
    problems.extend(_check_sources(loaded, lines))
    if not problems:
        problems.extend(_check_training(loaded, lines))
    if problems:
        raise SuiteError([f"{shown}:{line}: {msg}" for line, msg in sorted(problems)])
    loaded.warnings = [f"{shown}:{line}: warning: {msg}" for line, msg in sorted(_gate_warnings(suite, lines))]
    return loaded


def _check_plugins(suite: Suite, lines) -> list[tuple[int, str]]:
    from audit.attacks.base import ATTACKS
    from audit.explainers.base import EXPLAINERS
    from audit.metrics.base import METRICS

    problems: list[tuple[int, str]] = []
    for section, registry in (("explainers", EXPLAINERS), ("attacks", ATTACKS), ("metrics", METRICS)):
        seen: dict[str, int] = {}
        for index, item in enumerate(getattr(suite, section)):
            item_path = (section, index)
            if item.id in seen:
                problems.append((line_of(lines, item_path), f"{section}: id {item.id!r} is used twice "
                                 f"(also item {seen[item.id] + 1}); give one of them another id:"))
            seen.setdefault(item.id, index)
            if item.plugin not in registry:
                problems.append((line_of(lines, item_path + (item.plugin,)),
                                 f"{section}: {registry.unknown_message(item.plugin)}"))
                continue
            params_model = registry.get(item.plugin).Params
            try:
                params_model.model_validate(item.params)
            except ValidationError as exc:
                for error in exc.errors():
                    loc = item_path + (item.plugin,) + _loc_path(error["loc"])
                    key = ".".join(str(p) for p in _loc_path(error["loc"]))
                    msg = _format_pydantic(error)
                    if error.get("type") == "extra_forbidden":
                        known = ", ".join(params_model.model_fields) or "none"
                        msg = f"unknown parameter; {item.plugin} takes: {known}"
                    # a model-level validator's error has no field: name the plugin alone
                    where = f"{item.plugin}.{key}" if key else item.plugin
                    problems.append((line_of(lines, loc), f"{where}: {msg}"))
    return problems


def _check_hooks(suite: Suite, lines) -> list[tuple[int, str]]:
    """Explainers that hook the model's modules (Grad-CAM, LRP) on a ``torchscript:`` model, which
    runs no hooks: refused here, before anything loads. Gradients flow through TorchScript, so
    the gradient explainers and the black-box ones run on it."""
    from audit.explainers.base import EXPLAINERS

    if not suite.model.source.startswith("torchscript:"):
        return []
    usable = sorted(n for n, cls in EXPLAINERS if not cls.needs_module_hooks)
    return [(line_of(lines, ("explainers", index, item.plugin)),
             f"explainers: {item.plugin} hooks the model's layers, which a TorchScript model does not run; "
             "give the model's Python code (source: import:pkg.module:callable with weights:) or use "
             f"an explainer that needs no hooks ({', '.join(usable)})")
            for index, item in enumerate(suite.explainers)
            if item.plugin in EXPLAINERS and EXPLAINERS.get(item.plugin).needs_module_hooks]


def _check_attack_bases(suite: Suite, lines) -> list[tuple[int, str]]:
    """An attack that builds on another's model (``Attack.builds_on``, e.g. ``weight_noise: {of:
    ...}``) must name another attack of the suite that changes the model, without cycles."""
    from audit.attacks.base import ATTACKS

    attacks = {a.id: ATTACKS.create(a.plugin, a.params) for a in suite.attacks}
    problems = []
    for index, item in enumerate(suite.attacks):
        base = attacks[item.id].builds_on()
        if base is None:
            continue
        where = line_of(lines, ("attacks", index, item.plugin, "of"))
        if base == item.id or base not in attacks:
            others = sorted(a for a in attacks if a != item.id and attacks[a].changes_model())
            problems.append((where, f"attacks: {item.id!r} builds on attack {base!r}, which is not another "
                                    f"attack of this suite; use one of {', '.join(others) or '(none)'}"))
            continue
        if not attacks[base].changes_model():
            problems.append((where, f"attacks: {item.id!r} builds on {base!r}, whose model is the original "
                                    f"one (it only changes inputs); leave the reference out to use the original model"))
            continue
        seen, current = [item.id], base
        while current is not None and current in attacks and current not in seen:
            seen.append(current)
            current = attacks[current].builds_on()
        if current == item.id:
            problems.append((where, f"attacks: {' -> '.join(seen + [item.id])} build on each other in a "
                                    "cycle; one of them must start from the original model"))
    return problems


def _check_gates(suite: Suite, lines) -> list[tuple[int, str]]:
    from audit.metrics.base import METRICS

    attacks = {a.id for a in suite.attacks}
    explainers = {e.id for e in suite.explainers}
    metrics = {m.id: m.plugin for m in suite.metrics}
    problems = []
    for index, gate in enumerate(suite.gates):
        def bad(key: str, msg: str, index: int = index) -> None:
            problems.append((line_of(lines, ("gates", index, key)), f"gates[{index}].{key}: {msg}"))

        if gate.metric not in metrics:
            bad("metric", f"the suite computes no metric {gate.metric!r}; add it under metrics: or "
                          f"use one of {', '.join(sorted(metrics)) or '(none listed)'}")
        if gate.attack != "*" and gate.attack not in attacks:
            bad("attack", f"no attack with id {gate.attack!r} in this suite; use one of "
                          f"{', '.join(sorted(attacks))} or '*'")
        if gate.explainer not in ("*", "-") and gate.explainer not in explainers:
            bad("explainer", f"no explainer with id {gate.explainer!r} in this suite; use one of "
                             f"{', '.join(sorted(explainers)) or '(none)'}, '*' or '-'")
        plugin = metrics.get(gate.metric)
        if plugin in METRICS:
            per_explainer = METRICS.get(plugin).per_explainer()
            if per_explainer and gate.explainer == "-":
                bad("explainer", f"metric {gate.metric!r} is computed per explainer; name one or '*'")
            if not per_explainer and gate.explainer not in ("*", "-"):
                bad("explainer", f"metric {gate.metric!r} does not depend on an explainer; use '-'")
            if per_explainer and not suite.explainers:
                bad("metric", f"metric {gate.metric!r} needs an explainer and the suite lists none")
    return problems


def _check_metric_scope(suite: Suite, lines) -> list[tuple[int, str]]:
    """``attacks:`` / ``explainers:`` only on metrics, naming ids of the suite; a metric's
    ``reference`` explainer (:meth:`Metric.reference_explainer`) one of the suite's explainers."""
    from audit.metrics.base import METRICS

    attacks = [a.id for a in suite.attacks]
    explainers = [e.id for e in suite.explainers]
    problems = []
    for section in ("explainers", "attacks"):
        for index, item in enumerate(getattr(suite, section)):
            for key in ("attacks", "explainers"):
                if getattr(item, key) is not None:
                    problems.append((line_of(lines, (section, index, key)),
                                     f"{section}[{index}].{key}: only a metric says where it is computed; remove it"))
    for index, item in enumerate(suite.metrics):
        for key, known in (("attacks", attacks), ("explainers", explainers)):
            for name in getattr(item, key) or []:
                if name not in known:
                    problems.append((line_of(lines, ("metrics", index, key)),
                                     f"metrics[{index}].{key}: no {key[:-1]} with id {name!r} in this suite; use "
                                     f"one of {', '.join(known) or '(none)'}"))
        if item.explainers is not None and not METRICS.get(item.plugin).per_explainer():
            problems.append((line_of(lines, ("metrics", index, "explainers")),
                             f"metrics[{index}].explainers: metric {item.id!r} does not depend on an explainer; "
                             "remove explainers:"))
        reference = METRICS.create(item.plugin, item.params).reference_explainer()
        if reference is not None and reference not in explainers:
            problems.append((line_of(lines, ("metrics", index, item.plugin, "reference")),
                             f"metrics[{index}]: {item.plugin}'s reference {reference!r} is not an explainer id of "
                             f"this suite; add it under explainers: or use one of {', '.join(explainers) or '(none)'}"))
    return problems


def _check_checks(suite: Suite, lines) -> list[tuple[int, str]]:
    """Each check names a metric the suite computes under its attack for its explainer."""
    from audit.metrics.base import METRICS

    attacks = {a.id for a in suite.attacks}
    explainers = {e.id for e in suite.explainers}
    metrics = {m.id: m for m in suite.metrics}
    problems = []
    for index, rule in enumerate(suite.checks):
        def bad(key: str, msg: str, index: int = index) -> None:
            problems.append((line_of(lines, ("checks", index, key)), f"checks[{index}].{key}: {msg}"))

        item = metrics.get(rule.metric)
        if item is None:
            bad("metric", f"the suite computes no metric {rule.metric!r}; add it under metrics: or use one of "
                          f"{', '.join(sorted(metrics)) or '(none listed)'}")
            continue
        if rule.attack not in attacks:
            bad("attack", f"no attack with id {rule.attack!r} in this suite; use one of {', '.join(sorted(attacks))}")
            continue
        per_explainer = METRICS.get(item.plugin).per_explainer()
        if per_explainer and rule.explainer == "-":
            bad("explainer", f"metric {rule.metric!r} is computed per explainer; name one or '*'")
        elif not per_explainer and rule.explainer not in ("*", "-"):
            bad("explainer", f"metric {rule.metric!r} does not depend on an explainer; use '-'")
        elif rule.explainer not in ("*", "-") and rule.explainer not in explainers:
            bad("explainer", f"no explainer with id {rule.explainer!r} in this suite; use one of "
                             f"{', '.join(sorted(explainers)) or '(none)'}, '*' or '-'")
        elif not item.applies(attack=rule.attack):
            bad("attack", f"metric {rule.metric!r} is not computed under attack {rule.attack!r} (its attacks: "
                          f"{', '.join(item.attacks or [])}); add it there or check another attack")
        elif rule.explainer not in ("*", "-") and not item.applies(explainer=rule.explainer):
            bad("explainer", f"metric {rule.metric!r} is not computed for explainer {rule.explainer!r}")
    return problems


def _gate_warnings(suite: Suite, lines) -> list[tuple[int, str]]:
    """Gates that hold by construction: a clean-vs-attacked map comparison where every attack
    the gate matches is the identity (its attacked map is the clean map)."""
    from audit.attacks.base import ATTACKS
    from audit.metrics.base import METRICS

    kinds = {a.id: ATTACKS.get(a.plugin).kind for a in suite.attacks}
    metrics = {m.id: m for m in suite.metrics}
    warnings = []
    for index, gate in enumerate(suite.gates):
        matched = [a for a in kinds if gate.attack in ("*", a)]
        item = metrics[gate.metric]
        if not matched or any(kinds[a] != "identity" for a in matched):
            continue
        if not METRICS.create(item.plugin, item.params).compares_clean_to_attacked():
            continue
        attacks = ", ".join(repr(a) for a in matched)
        warnings.append((line_of(lines, ("gates", index, "attack")),
                         f"gates[{index}]: metric {gate.metric!r} compares the clean map with the attacked "
                         f"one, and attack {attacks} is the identity (its map is the clean map): the gate "
                         "holds by construction and cannot fail; gate this metric under an attack that "
                         "changes the input or the model"))
    return warnings


def _check_sources(loaded: LoadedSuite, lines) -> list[tuple[int, str]]:
    from audit.data.sources import check_data_config, has_single_labels
    from audit.models.sources import check_model_config, model_channels

    problems = []
    for key, msg in check_model_config(loaded.suite.model, loaded.resolve):
        problems.append((line_of(lines, ("model", key)), f"model.{key}: {msg}"))
    data_problems = check_data_config(loaded.suite.data, loaded.resolve, model_channels(loaded.suite.model))
    for key, msg in data_problems:
        problems.append((line_of(lines, ("data", key)), f"data.{key}: {msg}"))
    if not data_problems and loaded.suite.target == "label" and not has_single_labels(loaded.suite.data):
        problems.append((line_of(lines, ("target",)), f"target: {loaded.suite.data.source} images hold two "
                                                      "classes and carry no label; use target: predicted"))
    return problems


def training_plugins(suite: Suite) -> list[tuple[str, int, str]]:
    """(section, index, plugin) of every listed plugin that declares ``needs_training_data``."""
    from audit.attacks.base import ATTACKS
    from audit.explainers.base import EXPLAINERS
    from audit.metrics.base import METRICS

    found = []
    for section, registry in (("explainers", EXPLAINERS), ("attacks", ATTACKS), ("metrics", METRICS)):
        for index, item in enumerate(getattr(suite, section)):
            if item.plugin in registry and registry.get(item.plugin).needs_training_data:
                found.append((section, index, item.plugin))
    return found


def _check_training(loaded: LoadedSuite, lines) -> list[tuple[int, str]]:
    """Training data: present where a plugin trains, valid, and never the audited images."""
    from audit.data.sources import check_data_config, same_images
    from audit.models.sources import model_channels

    data = loaded.suite.data
    trainers = training_plugins(loaded.suite)
    train = data.training()
    problems = []
    if train is None:
        for section, index, plugin in trainers:
            problems.append((line_of(lines, (section, index, plugin)),
                             f"{section}: {plugin} trains and a {data.source.partition(':')[0]}: source has "
                             "no default training data; add data.train: {source: folder:PATH} (images "
                             "that are not audited)"))
        return problems
    if not trainers:
        return problems
    where = ("data", "train") if data.train is not None else ("data",)
    train_problems = check_data_config(train, loaded.resolve, model_channels(loaded.suite.model))
    for key, msg in train_problems:
        problems.append((line_of(lines, where + (key,)), f"data.train.{key}: {msg}"))
    if not train_problems and same_images(data, train, loaded.resolve):
        problems.append((line_of(lines, where + ("source",)),
                         "data.train: the training images are the audited images; train on another "
                         "folder or split (an attack must never learn the images it is audited on)"))
    return problems
