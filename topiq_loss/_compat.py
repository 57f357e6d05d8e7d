"""0.4's module paths, importable through 0.5 as aliases of the modules that replaced them.

``import topiq_loss.hub`` (or unpickling an object 0.4 saved, whose classes name
``topiq_loss.loss`` and friends) warns once with a FutureWarning and binds the old name to
the new module object itself, not a copy: ``sys.modules["topiq_loss.hub"] is
topiq_loss.weights.hub``, so a monkeypatch through either name patches the code that runs.
No file is left at the old path; the aliases live only in this table.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = ["ALIASES", "MOVED_NAMES", "install", "moved_name"]

_REMOVAL = "0.6"

#: Old module path -> the module that holds its code now. ``topiq_loss.weights``,
#: ``.functional``, ``.metrics`` and ``.cli`` are packages now and re-export their 0.4 names,
#: so they need no alias.
ALIASES: dict[str, str] = {
    "topiq_loss.backbone": "topiq_loss.models.backbone",
    "topiq_loss.layers": "topiq_loss.models.layers",
    "topiq_loss.trunk": "topiq_loss.models.trunk",
    "topiq_loss.cfanet": "topiq_loss.models.cfanet_fr",
    "topiq_loss.cfanet_nr": "topiq_loss.models.cfanet_nr",
    "topiq_loss.lpips_nets": "topiq_loss.weights.lpips",
    # 0.5's transfer layer is one module (issue #35): both 0.4 names lead to it.
    "topiq_loss.download": "topiq_loss.weights.hub",
    "topiq_loss.integrity": "topiq_loss.weights.hub",
    "topiq_loss.checkpoint": "topiq_loss.weights.checkpoint",
    "topiq_loss.hub": "topiq_loss.weights.hub",
    "topiq_loss.networks": "topiq_loss.weights.builder",
    "topiq_loss.functional_nr": "topiq_loss.functional.nr",
    "topiq_loss.objectives": "topiq_loss.functional.objectives",
    "topiq_loss.robust": "topiq_loss.functional.robust",
    "topiq_loss.maps": "topiq_loss.functional.maps",
    "topiq_loss.holder": "topiq_loss.losses.holder",
    "topiq_loss.frozen": "topiq_loss.losses.frozen",
    "topiq_loss.loss": "topiq_loss.losses.fr",
    "topiq_loss.loss_nr": "topiq_loss.losses.nr",
    "topiq_loss.lpips_loss": "topiq_loss.losses.lpips",
    "topiq_loss.mixing": "topiq_loss.training.mixing",
    "topiq_loss.adapters": "topiq_loss.training.restoration",
    "topiq_loss.gan": "topiq_loss.training.gan",
    "topiq_loss.cli_score": "topiq_loss.cli.score",
    "topiq_loss.cli_folders": "topiq_loss.cli.folders",
    "topiq_loss.cli_report": "topiq_loss.cli.report",
    "topiq_loss.cli_weights": "topiq_loss.cli.weights",
    "topiq_loss.cli_demo": "topiq_loss.cli.demo",
    "topiq_loss.images": "topiq_loss.cli.images",
    # deprecated since 0.4 already (a DeprecationWarning then, kept as one)
    "topiq_loss.basicsr_loss": "topiq_loss.integrations.basicsr",
}

_CATEGORY: dict[str, type[Warning]] = {"topiq_loss.basicsr_loss": DeprecationWarning}

#: Names 0.4 had in a module that 0.5 moved elsewhere: module now -> {name: "module:name" it
#: lives at now}. The module's ``__getattr__`` answers them through :func:`moved_name`.
MOVED_NAMES: dict[str, dict[str, str]] = {
    "topiq_loss.cli.score": {
        "new_loss": "topiq_loss.cli.scorer:new_loss",
        "new_lpips_plus": "topiq_loss.cli.scorer:new_lpips_plus",
        "METRICS": "topiq_loss.cli.scorer:METRICS",
    },
    "topiq_loss.cli.images": {"refuse_overwrite": "topiq_loss._compat:refuse_overwrite"},
}
#: What to use instead, where the name itself lives on only here.
_INSTEAD = {"topiq_loss._compat:refuse_overwrite": "topiq_loss.cli.outputs.check_outputs"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        # stacklevel 2: warnings skips importlib's own frames, so this names the import line.
        warnings.warn(
            f"{old} is deprecated and will be removed in {_REMOVAL}: import {self.target} instead",
            _CATEGORY.get(old, FutureWarning),
            stacklevel=2,
        )
        # importlib returns whatever sys.modules holds for the name once exec_module is done,
        # and binds that on the parent package: the old name becomes the new module itself.
        sys.modules[old] = importlib.import_module(self.target)


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = ALIASES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once (a reload does not add a second).

    First in the list: it answers for the names in :data:`ALIASES` only, and must win over
    a finder that maps the package to a folder (an editable install) where a stale 0.4
    file could still lie."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def attribute(package: str, name: str) -> types.ModuleType:
    """``topiq_loss.<name>`` read as an attribute before anything imported it."""
    full = f"{package}.{name}"
    if full not in ALIASES:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(full)


def moved_name(module: str, name: str) -> object:
    """``module.name`` for a name 0.4 had there (see :data:`MOVED_NAMES`), with the
    FutureWarning every 0.4 path gives; for a module's ``__getattr__``.

    Raises:
        AttributeError: ``name`` is no such name of ``module``.
    """
    target = MOVED_NAMES.get(module, {}).get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    old = next((o for o, n in ALIASES.items() if n == module), module)
    where, attr = target.split(":")
    # stacklevel 3: past this function and the module's __getattr__, to the user's line.
    warnings.warn(
        f"{old}.{name} is deprecated and will be removed in {_REMOVAL}: use "
        f"{_INSTEAD.get(target, f'{where}.{attr}')} instead",
        FutureWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(where), attr)


def refuse_overwrite(output: object, inputs: object) -> None:
    """0.4's ``topiq_loss.images.refuse_overwrite(output, inputs)``: ``ValueError`` when
    ``output`` is one of the files ``inputs`` (by any path). 0.5 guards every output of a
    command with ``topiq_loss.cli.outputs.check_outputs``, which this calls (it also refuses
    an output that is a folder or whose folder does not exist)."""
    importlib.import_module("topiq_loss.cli.outputs").check_outputs({"OUTPUT": output}, inputs)
