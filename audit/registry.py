"""One registry type for explainers, attacks and metrics.

- Built-in plugins register themselves with the ``@registry.register("name")`` decorator when
  their module is imported. Their modules are imported lazily, on the first lookup or listing,
  so ``import audit`` stays cheap.
- Third-party plugins are found through entry points (group ``explain_audit.explainers``,
  ``explain_audit.attacks`` or ``explain_audit.metrics``); the entry point's name is the plugin
  name and its object a plugin class (or a module whose import registers one).
- An unknown name raises :class:`UnknownPluginError` with the closest known name.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from audit.errors import UserError


class Params(BaseModel):
    """Base of every plugin's parameter model: unknown keys are an error, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plugin:
    """Base of explainers, attacks and metrics.

    Subclasses set ``Params`` (a :class:`Params` model) and their capability flags; ``name`` is
    filled in by the registry. The first line of the class docstring is the one-line summary
    that ``explain-audit list`` prints.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    # True for plugins that learn from images (e.g. the gating attack): the suite must then have
    # training data (``data.train`` or a builtin default), and validation says so when it has none
    needs_training_data: ClassVar[bool] = False

    def __init__(self, params: Params | None = None, **kwargs: Any):
        if params is not None and kwargs:
            raise TypeError("pass either a Params instance or keyword parameters, not both")
        self.params = params if params is not None else self.Params(**kwargs)

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """Capability flags shown by ``list``; subclasses extend this."""
        return {"needs_training_data": cls.needs_training_data} if cls.needs_training_data else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class UnknownPluginError(UserError):
    pass


P = TypeVar("P", bound=Plugin)


class Registry(Generic[P]):
    def __init__(self, kind: str, base: type[P], package: str):
        self.kind = kind  # "explainer", "attack", "metric"
        self.base = base
        self.package = package  # built-in plugins live in this package's modules
        self.group = f"explain_audit.{kind}s"
        self._plugins: dict[str, type[P]] = {}
        self._loaded = False
        self._loading = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[type[P]], type[P]]:
        def decorate(cls: type[P]) -> type[P]:
            self.add(name, cls)
            return cls

        return decorate

    def add(self, name: str, cls: type[P]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a {self.base.__name__} subclass")
        existing = self._plugins.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"{self.kind} name {name!r} is already taken by {existing.__module__}."
                             f"{existing.__qualname__}")
        cls.name = name
        self._plugins[name] = cls

    # -- discovery ----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
            for ep in metadata.entry_points(group=self.group):
                self._load_entry_point(ep)
            self._loaded = True
        finally:
            self._loading = False

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break the tool
            raise UserError(f"the {self.kind} plugin {ep.name!r} (entry point {ep.value}) failed to "
                            f"import: {exc}; fix or uninstall that package") from exc
        if isinstance(obj, type) and issubclass(obj, self.base) and ep.name not in self._plugins:
            self.add(ep.name, obj)

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load()
        return sorted(self._plugins)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._plugins

    def __iter__(self) -> Iterator[tuple[str, type[P]]]:
        self._load()
        return iter(sorted(self._plugins.items()))

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        return close[0] if close else None

    def unknown_message(self, name: str) -> str:
        hint = self.suggest(name)
        fix = f"did you mean {hint!r}?" if hint else f"known {self.kind}s: {', '.join(self.names())}"
        return f"unknown {self.kind} {name!r} — {fix} (see `explain-audit list {self.kind}s`)"

    def get(self, name: str) -> type[P]:
        self._load()
        try:
            return self._plugins[name]
        except KeyError:
            raise UnknownPluginError(self.unknown_message(name)) from None

    def create(self, name: str, params: dict | None = None) -> P:
        cls = self.get(name)
        return cls(cls.Params.model_validate(params or {}))
