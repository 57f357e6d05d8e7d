"""One weights registry with a kind per entry, list_weights() and build_network(weights, kind)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import topiq_loss
import topiq_loss.weights.builder as networks_mod
from topiq_loss import (
    NR_WEIGHTS,
    REGISTRY,
    WEIGHTS,
    CFANetNR,
    TOPIQLoss,
    WeightsError,
    build_network,
    build_nr_network,
    list_weights,
)
from topiq_loss.weights.builder import weights_entry
from topiq_loss.weights.checkpoint import LAYOUTS
from topiq_loss.weights.registry import (
    BUILD_BY_KIND,
    BUILD_BY_LAYOUT,
    DEFAULT_NR_WEIGHTS,
    DEFAULT_WEIGHTS,
    DEFAULT_WEIGHTS_BY_KIND,
    KINDS,
    LAYOUT_KINDS,
    WeightsKindError,
)

ALL = ["kadid", "pipal", "koniq", "spaq", "flive", "ava", "ava_swin", "face", "face_v1", "face_swin"]
BY_KIND = {
    "fr": ["kadid", "pipal"],
    "nr": ["koniq", "spaq", "flive", "face", "face_v1", "face_swin"],
    "iaa": ["ava", "ava_swin"],
}


# ------------------------------------------------------------------ the registry
def test_every_entry_has_a_valid_kind_and_the_network_of_that_kind():
    assert set(KINDS) <= set(LAYOUTS)  # a kind is a checkpoint layout (its ResNet50 one)
    assert set(LAYOUT_KINDS) == set(LAYOUTS) == set(BUILD_BY_LAYOUT)
    assert set(LAYOUT_KINDS.values()) == set(KINDS)
    for name, entry in REGISTRY.items():
        assert entry.name == name
        assert entry.kind in KINDS, name
        layouts = [k for k, build in BUILD_BY_LAYOUT.items() if build == entry.build]
        assert len(layouts) == 1 and LAYOUT_KINDS[layouts[0]] == entry.kind, name
        if "swin" not in name:
            assert entry.build is BUILD_BY_KIND[entry.kind], name
    assert REGISTRY["ava"].kind == "iaa" and REGISTRY["flive"].kind == "nr" and REGISTRY["pipal"].kind == "fr"


def test_an_entry_with_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match=r"`kind` must be one of \('fr', 'nr', 'iaa'\) or None; got 'NR'"):
        dataclasses.replace(REGISTRY["koniq"], kind="NR")


def test_list_weights_gives_all_names_in_registry_order():
    assert list_weights() == ALL
    assert list_weights(None) == list(REGISTRY)


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_list_weights_of_a_kind(kind):
    assert list_weights(kind) == BY_KIND[kind]


@pytest.mark.parametrize("bad", ["FR", "quality", "", 1])
def test_list_weights_refuses_an_unknown_kind_by_name(bad):
    with pytest.raises(ValueError, match=rf"`kind` must be one of \('fr', 'nr', 'iaa'\) or None; got {bad!r}"):
        list_weights(bad)


def test_the_old_registries_are_the_kind_filtered_views():
    assert WEIGHTS == {n: e for n, e in REGISTRY.items() if e.kind == "fr"}
    assert NR_WEIGHTS == {n: e for n, e in REGISTRY.items() if e.kind in ("nr", "iaa")}
    assert list(WEIGHTS) == BY_KIND["fr"] and list(NR_WEIGHTS) == [n for n in ALL if n not in BY_KIND["fr"]]
    assert "koniq" not in WEIGHTS and "kadid" not in NR_WEIGHTS
    assert DEFAULT_WEIGHTS == "kadid" and DEFAULT_NR_WEIGHTS == "koniq"
    for kind, name in DEFAULT_WEIGHTS_BY_KIND.items():
        assert REGISTRY[name].kind == kind


def test_the_old_registries_read_the_registry_and_are_read_only(monkeypatch):
    local = dataclasses.replace(REGISTRY["kadid"], filename="kadid-00000000.pth", sha256_prefix="0" * 8)
    monkeypatch.setitem(REGISTRY, "kadid", local)
    assert WEIGHTS["kadid"] is local
    monkeypatch.undo()
    assert WEIGHTS["kadid"] is REGISTRY["kadid"] and REGISTRY["kadid"].urls[0].startswith("https://github.com/")
    with pytest.raises(TypeError):
        NR_WEIGHTS["mine"] = REGISTRY["koniq"]  # change REGISTRY instead
    assert "mine" not in REGISTRY


def test_an_entry_describes_a_test_file_by_its_name_alone():
    entry = dataclasses.replace(REGISTRY["kadid"], filename="mine-0123abcd.pth", sha256_prefix="0123abcd")
    assert entry.urls == (
        "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/mine-0123abcd.pth",
        "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/mine-0123abcd.pth",
    )
    assert entry.kind == "fr" and entry.hub_repo == "chaofengc/IQA-PyTorch-Weights"


def test_the_package_exports_the_registry():
    assert topiq_loss.REGISTRY is REGISTRY and topiq_loss.list_weights is list_weights
    assert {"REGISTRY", "list_weights"} <= set(topiq_loss.__all__)


# ------------------------------------------------------------------ build_network: which weights, which kind
@pytest.fixture()
def calls(monkeypatch):
    """No download, no load, no CFANet: what build_network asks resolve_weights for, and the
    kind of network it then builds."""
    seen = []

    def fake_resolve(weights, cache_dir=None, progress=True, registry=REGISTRY):
        seen.append({"weights": weights, "registry": list(registry)})
        return {}, "a state dict of no known layout", None

    monkeypatch.setattr(networks_mod, "resolve_weights", fake_resolve)
    for kind in KINDS:
        monkeypatch.setitem(networks_mod.BUILD_BY_LAYOUT, kind, lambda kind=kind: seen[-1].update(default=kind) or torch.nn.Identity())
    return seen


def test_defaults_per_kind_and_none_stays_random(calls):
    build_network()
    build_network(kind="nr")
    build_network(kind="iaa")
    build_network(None)
    build_network(None, kind="iaa")
    build_network("random", "nr")
    assert [c["weights"] for c in calls] == ["kadid", "koniq", "ava", None, None, "random"]
    assert [c["default"] for c in calls] == ["fr", "nr", "iaa", "fr", "iaa", "nr"]
    assert calls[0]["registry"] == ALL and calls[1]["registry"] == BY_KIND["nr"]


def test_a_registry_name_brings_its_kind(calls):
    build_network("ava")
    build_network("pipal", kind="fr")
    assert [c["weights"] for c in calls] == ["ava", "pipal"]
    assert calls[1]["registry"] == BY_KIND["fr"]


def test_build_nr_network_takes_quality_and_aesthetics_weights(calls):
    build_nr_network()
    build_nr_network("ava")
    build_nr_network(None)
    assert [c["weights"] for c in calls] == ["koniq", "ava", None]
    assert calls[0]["registry"] == [n for n in ALL if n not in BY_KIND["fr"]]  # registry order
    assert calls[2]["default"] == "nr"  # random weights: quality
    with pytest.raises(WeightsKindError, match=r"got 'kadid', whose kind is 'fr'"):
        build_nr_network("kadid")
    assert len(calls) == 3


def test_a_bad_kind_is_named_before_anything_is_loaded(calls):
    with pytest.raises(ValueError, match=r"`kind` must be one of \('fr', 'nr', 'iaa'\) or None; got 'quality'"):
        build_network("koniq", kind="quality")
    assert calls == []


@pytest.fixture()
def no_download(monkeypatch, tmp_path):
    """Any download or load fails the test; the cache is empty."""

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be downloaded or loaded")

    monkeypatch.setattr(networks_mod, "resolve_weights", refuse)
    return tmp_path / "empty_cache"


@pytest.mark.parametrize(
    ("name", "kind", "its_kind"),
    [("koniq", "fr", "nr"), ("kadid", "nr", "fr"), ("ava", "nr", "iaa"), ("flive", "iaa", "nr")],
)
def test_a_registry_name_of_another_kind_is_refused_before_any_download(no_download, name, kind, its_kind):
    with pytest.raises(ValueError, match=rf"for `kind` '{kind}'; got '{name}', whose kind is '{its_kind}'") as info:
        build_network(name, kind=kind, cache_dir=no_download, progress=False)
    assert isinstance(info.value, WeightsError)  # WeightsKindError: either except catches it
    assert repr(sorted(BY_KIND[kind])) in str(info.value)  # the names that would do
    assert not no_download.exists()


def test_topiq_loss_still_takes_only_full_reference_weights(no_download):
    with pytest.raises(ValueError, match=r"`weights` must be one of \['kadid', 'pipal'\].*got 'koniq'"):
        TOPIQLoss(weights="koniq", cache_dir=no_download)


# ------------------------------------------------------------------ build_network: real networks (3 built in all)
@pytest.fixture(scope="module")
def random_nr() -> CFANetNR:
    with pytest.warns(UserWarning, match="RANDOM weights, scores are meaningless"):
        return build_network("random", kind="nr")


@pytest.fixture(scope="module")
def nr_file(tmp_path_factory, random_nr):
    path = tmp_path_factory.mktemp("registry") / "my_nr.pth"
    torch.save({"params": random_nr.state_dict()}, path)
    return path


def test_random_weights_of_a_kind(random_nr):
    assert type(random_nr) is CFANetNR and random_nr.num_class == 1
    assert not random_nr.training and not any(p.requires_grad for p in random_nr.parameters())


@pytest.mark.parametrize("kind", ["nr", None])
def test_a_file_builds_the_network_of_its_layout(nr_file, random_nr, kind):
    net = build_network(nr_file, kind=kind, progress=False)
    assert type(net) is CFANetNR and net.num_class == 1 and not net.training
    assert weights_entry(net) is None  # a file of no official name
    own, saved = net.state_dict(), random_nr.state_dict()
    assert own.keys() == saved.keys() and all(torch.equal(own[k], saved[k]) for k in own)


@pytest.mark.parametrize(("kind", "want"), [("fr", "CFANet-FR"), ("iaa", "CFANet-NR aesthetics")])
def test_a_file_of_another_kind_is_refused_naming_both(nr_file, kind, want):
    with pytest.raises(
        ValueError,
        match=rf"is a CFANet-NR quality .* checkpoint, not a {want} .*: "
        rf"its kind is 'nr', not '{kind}'",
    ) as info:
        build_network(str(nr_file), kind=kind, progress=False)
    assert isinstance(info.value, WeightsError)


@pytest.mark.parametrize(("layout", "kind"), [("fr", "nr"), ("iaa", "fr"), ("iaa", "nr")])
def test_layouts_are_checked_before_a_network_is_built(tmp_path, monkeypatch, layout, kind):
    # Only the tensors that tell the layout apart: loading them would fail, refusing must not.
    state = {"h_emb": torch.zeros(1, 256 if layout == "iaa" else 64, 1, 1)}
    state["weight_pool.0.0.weight" if layout == "fr" else "weight_pool.0.splitconv.weight"] = torch.zeros(1)
    path = tmp_path / f"{layout}.pth"
    torch.save(state, path)

    def no_build():
        raise AssertionError("no network may be built")

    monkeypatch.setitem(networks_mod.BUILD_BY_LAYOUT, kind, no_build)
    with pytest.raises(WeightsKindError, match=rf"its kind is '{layout}', not '{kind}'"):
        build_network(path, kind=kind)


# ------------------------------------------------------- the rest of the TOPIQ family (#38)
FAMILY = {
    # name: (file, kind, layout, resize, score range, dataset)
    "ava_swin": ("cfanet_iaa_ava_swin-393b41b4.pth", "iaa", "iaa_swin", None, (1.0, 10.0), "AVA"),
    "face": ("topiq_nr_cgfiqa_res50-0a8b8e4f.pth", "nr", "nr", 512, (0.0, 1.0), "CGFIQA-40k"),
    "face_v1": ("topiq_nr_gfiqa_res50-d76bf1ae.pth", "nr", "nr", 512, (0.0, 1.0), "GFIQA-20k"),
    "face_swin": ("topiq_nr_gfiqa_swin-7bb80a60.pth", "nr", "nr_swin", None, (0.0, 1.0), "GFIQA-20k"),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_the_swin_and_face_entries(name):
    filename, kind, layout, resize, score_range, dataset = FAMILY[name]
    entry = REGISTRY[name]
    assert (entry.filename, entry.kind, entry.resize, entry.score_range) == (filename, kind, resize, score_range)
    assert entry.sha256_prefix == filename.rsplit("-", 1)[1][:8]
    assert entry.build == BUILD_BY_LAYOUT[layout] and entry.meta["dataset"] == dataset
    if name.startswith("face"):
        assert "aligned, centred face crops (FFHQ-style); no face alignment is done" in entry.meta["input"]
    if layout.endswith("swin"):
        # The network resizes to 384x384 itself: the entry adds no second resize.
        assert "384x384" in entry.meta["backbone"]


def test_size_caps_fit_the_swin_files():
    """About 0.5 GB of tensors (counted from the official key lists: 484 MiB and 398 MiB)."""
    from topiq_loss.weights.reader import MAX_WEIGHTS_BYTES

    for name, tensors in (("ava_swin", 507_427_256), ("face_swin", 417_848_724)):
        assert tensors < REGISTRY[name].max_bytes <= MAX_WEIGHTS_BYTES, name
