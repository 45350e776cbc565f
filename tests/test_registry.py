from importlib import metadata

import pytest
from pydantic import ValidationError

from audit.errors import UserError
from audit.explainers.base import EXPLAINERS, Explainer
from audit.registry import Params, Registry, UnknownPluginError


class _Base(Explainer):
    pass


def make_registry() -> Registry:
    # a registry over a package with no plugin modules, so only what the test adds exists
    return Registry("explainer", Explainer, "audit.report")


def test_decorator_registers_and_sets_name():
    reg = make_registry()

    @reg.register("gradcam")
    class GradCam(_Base):
        """Grad-CAM stand-in."""

    assert reg.get("gradcam") is GradCam
    assert GradCam.name == "gradcam"
    assert "gradcam" in reg and reg.names() == ["gradcam"]
    assert GradCam.summary() == "Grad-CAM stand-in."


def test_unknown_name_suggests_the_closest():
    reg = make_registry()
    reg.register("gradcam")(type("G", (_Base,), {}))
    reg.register("saliency")(type("S", (_Base,), {}))
    with pytest.raises(UnknownPluginError) as err:
        reg.get("gradcm")
    assert "did you mean 'gradcam'?" in str(err.value)
    with pytest.raises(UnknownPluginError) as err:
        reg.get("zzzzzz")
    assert "known explainers: gradcam, saliency" in str(err.value)
    assert isinstance(err.value, UserError)


def test_name_clash_and_wrong_base_are_rejected():
    reg = make_registry()
    reg.register("a")(type("A", (_Base,), {}))
    with pytest.raises(ValueError, match="already taken"):
        reg.register("a")(type("B", (_Base,), {}))
    with pytest.raises(TypeError):
        reg.add("c", object)  # type: ignore[arg-type]


def test_create_validates_params():
    class P(Params):
        n: int = 3

    reg = make_registry()
    reg.register("p")(type("PExpl", (_Base,), {"Params": P}))
    assert reg.create("p", {"n": 5}).params.n == 5
    with pytest.raises(ValidationError):
        reg.create("p", {"m": 1})  # extra keys are forbidden


class ThirdParty(_Base):
    """A plugin shipped by another package."""


def test_entry_points_add_third_party_plugins(monkeypatch):
    ep = metadata.EntryPoint(name="thirdparty", value=f"{__name__}:ThirdParty",
                             group="explain_audit.explainers")

    def fake_entry_points(group=None):
        return [ep] if group == "explain_audit.explainers" else []

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg = make_registry()
    assert reg.get("thirdparty") is ThirdParty


def test_broken_entry_point_is_a_user_error(monkeypatch):
    ep = metadata.EntryPoint(name="broken", value="no_such_module_xyz:Thing", group="explain_audit.explainers")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [ep])
    reg = make_registry()
    with pytest.raises(UserError, match="failed to import"):
        reg.names()


def test_builtin_plugins_load_lazily():
    # in a fresh interpreter: the registry imports plugin modules on first lookup, not before
    import subprocess
    import sys

    script = ("import sys; from audit.explainers.base import EXPLAINERS\n"
              "assert 'audit.explainers.rise' not in sys.modules\n"
              "assert 'rise' in EXPLAINERS and 'audit.explainers.rise' in sys.modules\n")
    assert subprocess.run([sys.executable, "-c", script]).returncode == 0
    assert "saliency" in EXPLAINERS
