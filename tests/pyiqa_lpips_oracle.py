"""Load pyiqa's LPIPS (``pyiqa/archs/lpips_arch.py``, with ``lpips+`` / ``lpips-vgg+``'s
``semantic_weight_layer``) on its own, as the numerical oracle of ``LPIPSPlusLoss``.

As in ``pyiqa_oracle.py``: the installed file is executed alone with stand-ins for its
few pyiqa imports; nothing of pyiqa is copied here.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from pyiqa_oracle import _Registry, _stub, _unavailable


def load_pyiqa_lpips() -> types.ModuleType | None:
    """pyiqa's ``archs/lpips_arch.py`` executed alone, with stand-ins for its pyiqa imports."""
    spec = importlib.util.find_spec("pyiqa")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "archs" / "lpips_arch.py"
    if not path.is_file():
        return None
    stubs = {
        "pyiqa": _stub("pyiqa"),
        "pyiqa.archs": _stub("pyiqa.archs"),
        "pyiqa.utils": _stub("pyiqa.utils"),
        "pyiqa.utils.registry": _stub("pyiqa.utils.registry", ARCH_REGISTRY=_Registry()),
        "pyiqa.archs.arch_util": _stub(
            "pyiqa.archs.arch_util", load_pretrained_network=_unavailable, get_url_from_name=lambda n, *a, **k: n
        ),
    }
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        module = types.ModuleType("pyiqa.archs.lpips_arch")
        module.__package__ = "pyiqa.archs"
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    import torchvision.models as tvm

    # Its trunks always ask torchvision for ImageNet weights: offline, torchvision's model
    # is built uninitialised instead (no download, no init of the unused classifier); the
    # lpips module's weights are loaded into it below.
    def empty(build):
        def make(**kwargs):
            with torch.device("meta"):
                model = build()
            return model.to_empty(device="cpu")

        return make

    module.models = types.SimpleNamespace(alexnet=empty(tvm.alexnet), vgg16=empty(tvm.vgg16))
    return module
