"""Load pyiqa's reference CFANet (``pyiqa/archs/topiq_arch.py``) on its own.

pyiqa's package ``__init__`` imports many heavy optional modules, so the file is
executed alone, with small stand-ins for the few helpers it imports. Nothing of
pyiqa is copied here: its installed source is read at test time.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch


def _find_topiq_arch() -> Path | None:
    spec = importlib.util.find_spec("pyiqa")  # does not execute pyiqa/__init__.py
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "archs" / "topiq_arch.py"
    return path if path.is_file() else None


def _stub(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # let it act as a package for dotted imports
    mod.__dict__.update(attrs)
    return mod


class _Registry:
    def register(self):  # noqa: D401 - mimics pyiqa's decorator factory
        return lambda cls: cls


def _dist_to_mos(score: torch.Tensor) -> torch.Tensor:
    # pyiqa maps a (N, C) class distribution to its expected score over 1..C (the
    # documented behaviour of its dist_to_mos); for C == 1 that is the score itself.
    values = torch.arange(1, score.shape[-1] + 1, dtype=score.dtype, device=score.device)
    return (score * values).sum(dim=-1, keepdim=True)


def _unavailable(*args, **kwargs):
    raise RuntimeError("stand-in: not available when loading topiq_arch.py alone")


def load_reference_module(create_swin=_unavailable) -> types.ModuleType | None:
    """pyiqa's topiq_arch module, or None where pyiqa or timm is not installed.

    ``create_swin`` stands in for ``pyiqa.archs.topiq_swin.create_swin`` (by default
    one that refuses: the ResNet50 oracles never build a Swin)."""
    path = _find_topiq_arch()
    if path is None or importlib.util.find_spec("timm") is None:
        return None
    stubs = {
        "pyiqa": _stub("pyiqa"),
        "pyiqa.archs": _stub("pyiqa.archs"),
        "pyiqa.archs.constants": _stub(
            "pyiqa.archs.constants",
            IMAGENET_DEFAULT_MEAN=(0.485, 0.456, 0.406),
            IMAGENET_DEFAULT_STD=(0.229, 0.224, 0.225),
            OPENAI_CLIP_MEAN=(0.0, 0.0, 0.0),
            OPENAI_CLIP_STD=(1.0, 1.0, 1.0),
        ),
        "pyiqa.utils": _stub("pyiqa.utils"),
        "pyiqa.utils.registry": _stub("pyiqa.utils.registry", ARCH_REGISTRY=_Registry()),
        "pyiqa.utils.download_util": _stub("pyiqa.utils.download_util", DEFAULT_CACHE_DIR="/nonexistent"),
        "pyiqa.archs.arch_util": _stub(
            "pyiqa.archs.arch_util",
            dist_to_mos=_dist_to_mos,
            load_pretrained_network=_unavailable,
            uniform_crop=_unavailable,
            get_url_from_name=lambda name, *a, **k: f"stand-in://{name}",
        ),
        "pyiqa.archs.clip_model": _stub("pyiqa.archs.clip_model", load=_unavailable),
        "pyiqa.archs.topiq_swin": _stub("pyiqa.archs.topiq_swin", create_swin=create_swin),
        "facexlib": _stub("facexlib"),
        "facexlib.utils": _stub("facexlib.utils"),
        "facexlib.utils.face_restoration_helper": _stub(
            "facexlib.utils.face_restoration_helper", FaceRestoreHelper=_unavailable
        ),
    }
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        module = types.ModuleType("pyiqa.archs.topiq_arch")
        module.__file__ = str(path)
        module.__package__ = "pyiqa.archs"
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


def build_reference_fr() -> torch.nn.Module | None:
    """pyiqa's ``CFANet(use_ref=True)`` with random init (no download), in eval mode."""
    module = load_reference_module()
    if module is None:
        return None
    net = module.CFANet(
        semantic_model_name="resnet50",
        model_name="cfanet_fr_kadid_res50",
        backbone_pretrain=False,
        use_ref=True,
        pretrained=False,
    )
    return net.eval()


def build_reference_nr(aesthetics: bool = False, test_img_size: int | None = None) -> torch.nn.Module | None:
    """pyiqa's ``CFANet(use_ref=False)`` (quality, or the AVA aesthetics layout), random init."""
    module = load_reference_module()
    if module is None:
        return None
    extra = {"inter_dim": 512, "num_heads": 8, "num_class": 10} if aesthetics else {}
    net = module.CFANet(
        semantic_model_name="resnet50",
        model_name="cfanet_iaa_ava_res50" if aesthetics else "cfanet_nr_koniq_res50",
        backbone_pretrain=False,
        use_ref=False,
        pretrained=False,
        test_img_size=test_img_size,
        **extra,
    )
    return net.eval()


def _load_swin_module() -> types.ModuleType | None:
    """pyiqa's ``archs/topiq_swin.py`` executed alone (it imports only torch and timm)."""
    path = _find_topiq_arch()
    if path is None or importlib.util.find_spec("timm") is None:
        return None
    swin_path = path.with_name("topiq_swin.py")
    if not swin_path.is_file():
        return None
    module = types.ModuleType("pyiqa.archs.topiq_swin")
    module.__file__ = str(swin_path)
    exec(compile(swin_path.read_text(), str(swin_path), "exec"), module.__dict__)
    return module


def build_reference_swin_nr(aesthetics: bool = False) -> torch.nn.Module | None:
    """pyiqa's ``CFANet(use_ref=False)`` with its own Swin-B (window 12, 384 px), random
    init, no download: the stand-in ``create_swin`` builds pyiqa's
    ``swin_base_patch4_window12_384`` with ``pretrained=False``."""
    swin = _load_swin_module()
    if swin is None:
        return None

    def create_swin(name: str, **kwargs: object) -> torch.nn.Module:
        kwargs["pretrained"] = False
        return swin.create_swin(name, **kwargs)

    module = load_reference_module(create_swin)
    if module is None:
        return None
    extra = {"inter_dim": 512, "num_heads": 8, "num_class": 10} if aesthetics else {}
    net = module.CFANet(
        semantic_model_name="swin_base_patch4_window12_384",
        # Not the face file's name: a name holding "gfiqa" makes pyiqa build facexlib's
        # face aligner, which the crops given here do not need (nor the loss).
        model_name="cfanet_iaa_ava_swin" if aesthetics else "topiq_nr_swin",
        backbone_pretrain=False,
        use_ref=False,
        pretrained=False,
        **extra,
    )
    return net.eval()
