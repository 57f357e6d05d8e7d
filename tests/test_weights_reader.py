"""Issue 27, weights part: one reader for every weights file (TOPIQ checkpoints, LPIPS
files, the lpips package's linear layers, torchvision's backbone tensors), one
classification of ``weights=``, one deadline over a whole download, one reader of
environment variables. Every test here failed on 0.4 (the failure is in the docstring)."""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from conftest import distort, smooth_images
from weights_server import ServedFile, checkpoint_bytes, entry_for, hash_named

import topiq_loss
import topiq_loss.weights.hub as download
import topiq_loss.weights.lpips as lpips_nets
from topiq_loss import LPIPSLoss, LPIPSPlusLoss, TOPIQLoss, TOPIQNRLoss, WeightsError, download_weights, read_state_dict
from topiq_loss.cli.app import main
from topiq_loss.models.lpips import LPIPSNetwork
from topiq_loss.weights.hub import PINS_ENV

PACKAGE = Path(topiq_loss.__file__).parent
pytestmark = [
    pytest.mark.usefixtures("fresh_hub_state"),
    pytest.mark.filterwarnings("ignore:.*not an official HTTPS host"),
]


class Foreign:
    """A class of the test module: a pickle of it is code, not tensors."""

    def __init__(self) -> None:
        self.w = torch.ones(2)


def _bytes_of(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# Files that are not a dict of tensors, each a way a real mistake looks.
NOT_A_STATE_DICT = {
    "empty": b"",
    "list": _bytes_of([torch.ones(2), torch.zeros(2)]),
    "foreign-pickle": _bytes_of(Foreign()),
    "plain-pickle": pickle.dumps(Foreign()),
    "text": b"not a checkpoint at all\n",
}


@pytest.fixture(scope="module")
def lpips_state() -> dict[str, torch.Tensor]:
    """An LPIPS-alex network's own state dict (random, no download)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = LPIPSNetwork("alex")
    with torch.no_grad():
        for w in net.lin_weights():
            w.abs_()
    return {k: v.clone() for k, v in net.state_dict().items()}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ 3. one reader, every file
@pytest.mark.parametrize("case", sorted(NOT_A_STATE_DICT))
@pytest.mark.parametrize("loader", ["topiq", "topiq-nr", "lpips", "lpips-plus"])
def test_a_file_that_is_not_tensors_is_a_weights_error_naming_it(tmp_path, case, loader):
    """0.4, LPIPS: EOFError (empty), AttributeError (list), UnpicklingError (pickles)."""
    path = _write(tmp_path, f"{case}.pth", NOT_A_STATE_DICT[case])
    build = {
        "topiq": lambda: TOPIQLoss(weights=path),
        "topiq-nr": lambda: TOPIQNRLoss(weights=str(path)),
        "lpips": lambda: LPIPSLoss(weights=path),
        "lpips-plus": lambda: LPIPSPlusLoss(weights=str(path)),
    }[loader]
    with pytest.raises(WeightsError) as info:
        build()
    assert str(path) in str(info.value)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", ["lins.0.weight", "features.0.bias"])
def test_an_lpips_file_with_non_finite_tensors_is_refused(tmp_path, lpips_state, bad, key):
    """0.4: loaded; every distance was NaN (and the CLI printed NaN with exit 0)."""
    state = dict(lpips_state)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float(bad)
    path = tmp_path / "lpips_nan.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: tensor '{re.escape(key)}' holds NaN or inf"):
        LPIPSPlusLoss(weights=path)


def test_a_good_lpips_file_still_loads_and_params_is_unwrapped(tmp_path, lpips_state):
    torch.save(lpips_state, tmp_path / "bare.pth")
    torch.save({"params": lpips_state}, tmp_path / "wrapped.pth")
    x = smooth_images(1, 40, 40, seed=1)
    y = distort(x, 2)
    bare, wrapped = LPIPSPlusLoss(weights=tmp_path / "bare.pth"), LPIPSPlusLoss(weights=tmp_path / "wrapped.pth")
    assert torch.isfinite(bare(y, x)) and torch.equal(bare(y, x), wrapped(y, x))


def test_the_cli_refuses_a_nan_lpips_file_with_exit_2(tmp_path, lpips_state, capsys):
    """0.4: `score --metric lpips+ --weights nan.pth --json` wrote NaN (invalid JSON), exit 0."""
    from PIL import Image

    state = dict(lpips_state)
    state["lins.2.weight"] = torch.full_like(state["lins.2.weight"], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (90, 20, 200)).save(img)
    out = tmp_path / "r.json"
    assert main(["score", str(img), str(img), "--metric", "lpips+", "--weights", str(path), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "lins.2.weight" in err and not out.exists()


def _fake_backbone(monkeypatch, lpips_state, poison: str | None = None):
    import torchvision.models as tvm

    backbone = {k: v.clone() for k, v in lpips_state.items() if k.startswith("features.")}
    if poison is not None:
        backbone[poison].view(-1)[0] = float("nan")

    def fake(self, progress=True):
        return backbone

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", fake)


def _package_lins(monkeypatch, tmp_path, data: bytes) -> Path:
    path = _write(tmp_path, "alex.pth", data)
    monkeypatch.setattr(lpips_nets, "lpips_package_lins", lambda net: path)
    return path


def test_the_lpips_package_lins_go_through_the_reader(tmp_path, monkeypatch, lpips_state):
    """0.4: NaN linear layers from the package data loaded; a foreign pickle raised UnpicklingError raw."""
    _fake_backbone(monkeypatch, lpips_state)
    lins = {k: v.clone() for k, v in lpips_state.items() if k.startswith("lins.")}
    lins["lins.1.weight"].view(-1)[3] = float("nan")
    path = _package_lins(monkeypatch, tmp_path, _bytes_of(lins))
    with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: tensor 'lins.1.weight' holds NaN"):
        LPIPSPlusLoss()
    for case, data in NOT_A_STATE_DICT.items():
        (tmp_path / case).mkdir()
        path = _package_lins(monkeypatch, tmp_path / case, data)
        with pytest.raises(WeightsError, match=re.escape(str(path))):
            LPIPSLoss()


def test_torchvision_backbone_tensors_are_validated(tmp_path, monkeypatch, lpips_state):
    """0.4: a NaN in torchvision's backbone (a corrupt hub cache file) loaded silently."""
    _fake_backbone(monkeypatch, lpips_state, poison="features.3.weight")
    lins = {k: v for k, v in lpips_state.items() if k.startswith("lins.")}
    _package_lins(monkeypatch, tmp_path, _bytes_of(lins))
    with pytest.raises(WeightsError, match=r"torchvision.*tensor 'features\.3\.weight' holds NaN"):
        LPIPSPlusLoss()


def test_an_lpips_module_with_nan_weights_is_refused(lpips_state):
    """0.4: from_lpips copied NaN weights silently."""
    lpips = pytest.importorskip("lpips")
    import warnings

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        module = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    with torch.no_grad():
        module.lin0.model[1].weight.view(-1)[0] = float("nan")
    with pytest.raises(WeightsError, match=r"LPIPS\(net='alex'\): tensor 'lin0\.model\.1\.weight' holds NaN"):
        LPIPSPlusLoss.from_lpips(module)


@pytest.mark.parametrize("case", sorted(NOT_A_STATE_DICT))
def test_read_state_dict_names_the_file_for_every_bad_file(tmp_path, case):
    path = _write(tmp_path, f"{case}.pth", NOT_A_STATE_DICT[case])
    with pytest.raises(WeightsError, match=re.escape(str(path))):
        read_state_dict(path)


def test_the_package_has_exactly_one_torch_load():
    """0.4: three (checkpoint.py and twice in lpips_nets.py)."""
    calls = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        n = len(re.findall(r"\btorch\s*\.\s*load\b(?!_)", text))
        n += len(re.findall(r"\bpickle\s*\.\s*loads?\b|from\s+torch(\.serialization)?\s+import\s+[^\n]*\bload\b", text))
        if n:
            calls[path.relative_to(PACKAGE).as_posix()] = n
    assert calls == {"weights/reader.py": 1}


# ------------------------------------------------------------------ 7. impossible BatchNorm statistics
@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("semantic_model.bn1.running_var", torch.tensor([1.0, -0.5, 2.0]), "negative"),
        ("semantic_model.layer1.0.bn2.running_var", torch.tensor([1.0, -1e-30]), "negative"),
        ("semantic_model.bn1.running_var", torch.tensor([1.0, float("nan")]), "NaN or inf"),
        ("semantic_model.bn1.running_mean", torch.tensor([1.0, float("inf")]), "NaN or inf"),
        ("semantic_model.bn1.running_var", torch.tensor([1.0, float("inf")]), "NaN or inf"),
    ],
    ids=["negative-var", "tiny-negative-var", "nan-var", "inf-mean", "inf-var"],
)
@pytest.mark.parametrize("wrapped", [True, False], ids=["params", "bare"])
def test_impossible_batchnorm_statistics_are_refused_at_load(tmp_path, key, value, problem, wrapped):
    """0.4, negative running_var: loaded; every call then said 'the values overflow inside the network'."""
    tensors = {"semantic_model.bn1.weight": torch.ones(3), key: value}
    path = tmp_path / "bn.pth"
    torch.save({"params": tensors} if wrapped else tensors, path)
    for load in (read_state_dict, lambda p: TOPIQLoss(weights=p), lambda p: TOPIQNRLoss(weights=str(p))):
        with pytest.raises(WeightsError, match=rf"{re.escape(str(path))}: tensor '{re.escape(key)}' .*{problem}"):
            load(path)


def test_a_zero_running_var_and_an_integer_counter_are_accepted(tmp_path):
    tensors = {
        "bn.running_var": torch.tensor([0.0, 1.0]),
        "bn.num_batches_tracked": torch.tensor(7),
        "bn.weight": torch.ones(2),
    }
    torch.save({"params": tensors}, tmp_path / "ok.pth")
    assert set(read_state_dict(tmp_path / "ok.pth")) == set(tensors)


def test_an_lpips_file_with_a_negative_running_var_is_refused_too(tmp_path, lpips_state):
    state = dict(lpips_state, **{"features.bn.running_var": torch.tensor([-1.0])})
    torch.save(state, tmp_path / "bn.pth")
    with pytest.raises(WeightsError, match=r"'features\.bn\.running_var' holds negative"):
        LPIPSPlusLoss(weights=tmp_path / "bn.pth")


# ------------------------------------------------------------------ 11. what a weights= value is
@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
@pytest.mark.parametrize("cls", [TOPIQLoss, TOPIQNRLoss, LPIPSPlusLoss])
def test_an_empty_weights_string_is_called_empty(cls, value):
    """0.4: TOPIQ said "`weights` file not found: ." (LPIPS: "must be ... an existing file; got ''")."""
    with pytest.raises(ValueError, match=r"`weights` is an empty string"):
        cls(weights=value)


@pytest.mark.parametrize("cls", [TOPIQLoss, TOPIQNRLoss, LPIPSPlusLoss])
@pytest.mark.parametrize("as_str", [True, False])
def test_a_folder_as_weights_is_called_a_folder(tmp_path, cls, as_str):
    """0.4: TOPIQ said "`weights` file not found: /tmp/..." of an existing folder."""
    with pytest.raises(ValueError, match=rf"`weights` {re.escape(str(tmp_path))} is a folder, not a weights file"):
        cls(weights=str(tmp_path) if as_str else tmp_path)


@pytest.mark.parametrize("cls", [TOPIQLoss, LPIPSPlusLoss])
def test_a_missing_file_is_called_missing_and_is_both_errors(tmp_path, cls):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=rf"`weights` file not found: {re.escape(str(missing))}") as info:
        cls(weights=missing)
    assert isinstance(info.value, WeightsError)


def test_an_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match=r"`weights` must be one of \['kadid', 'pipal'\].*got 'kadidd'"):
        TOPIQLoss(weights="kadidd")
    with pytest.raises(ValueError, match=r"`weights` must be 'default'.*got 'alexnet'"):
        LPIPSPlusLoss(weights="alexnet")


def test_the_cli_says_what_an_empty_or_folder_weights_is(tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(img)
    assert main(["score", str(img), str(img), "--weights", ""]) == 2
    assert "empty string" in capsys.readouterr().err
    assert main(["score", str(img), str(img), "--weights", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


# 5. one deadline over the whole exchange: gone with the hand-made transfer layer (issue #35);
# tests/test_hub.py::test_a_stalled_server_ends_with_the_download_timeout holds the socket timeout.


# ------------------------------------------------------------------ 6. environment variables
@pytest.mark.parametrize(
    "netloc, expected",
    [
        ("127.0.0.1:70000", "70000"),
        ("127.0.0.1:0", "0"),
        ("127.0.0.1:abc", "abc"),
        ("127.0.0.1:-1", "-1"),
        ("[::1:80", None),
    ],
    ids=["port-70000", "port-0", "non-numeric", "negative", "bad-ipv6"],
)
def test_a_bad_mirror_names_the_variable_before_any_download(server, tmp_path, monkeypatch, netloc, expected):
    """0.4: a bare ValueError ('Port out of range 0-65535', 'Port could not be cast...'); port 0 was tried."""
    data = checkpoint_bytes({"w": torch.arange(4.0)})
    name = hash_named("small", data)
    server.files[name] = ServedFile(data)
    monkeypatch.setenv(download.MIRROR_ENV, f"http://{netloc}/base?token=s3cret")
    with pytest.raises(WeightsError, match=rf"environment variable {download.MIRROR_ENV} .*got") as info:
        download_weights(entry_for(name), cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "s3cret" not in message
    if expected is not None:
        assert "port" in message and expected in message and "1..65535" in message
    assert server.requests == []


def test_a_good_mirror_port_is_used(server, tmp_path, monkeypatch):
    data = checkpoint_bytes({"w": torch.arange(4.0)})
    name = hash_named("small", data)
    server.files["m/" + name] = ServedFile(data)
    monkeypatch.setenv(download.MIRROR_ENV, server.url("m"))
    download_weights(entry_for(name), cache_dir=tmp_path, progress=False)
    assert server.requests == ["/m/" + name]


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_bad_pins_variable_names_it(server, tmp_path, monkeypatch, kind):
    target = tmp_path / "no-such-pins.txt" if kind == "missing" else tmp_path
    monkeypatch.setenv(PINS_ENV, str(target))
    data = checkpoint_bytes({"w": torch.arange(4.0)})
    name = hash_named("small", data)
    server.files[name] = ServedFile(data)
    with pytest.raises(WeightsError, match=rf"{PINS_ENV}.*{re.escape(str(target))}"):
        download_weights(entry_for(name), cache_dir=tmp_path / "c", progress=False)
    assert server.requests == []


@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_a_bad_basicsr_compat_value_names_the_variable(monkeypatch, value):
    """0.4: any value but '1' was silently ignored."""
    from topiq_loss.integrations import basicsr

    monkeypatch.setenv(basicsr.COMPAT_ENV, value)
    with pytest.raises(ValueError, match=rf"environment variable {basicsr.COMPAT_ENV} must be '1' .* got {value!r}"):
        basicsr.import_basicsr()


@pytest.mark.parametrize("value", ["0", "", " 1 "])
def test_good_basicsr_compat_values_are_accepted(monkeypatch, value):
    from topiq_loss.integrations import basicsr

    monkeypatch.setenv(basicsr.COMPAT_ENV, value)
    basicsr.import_basicsr()  # True or False by installation; no error


def test_every_environment_variable_is_read_by_the_one_helper():
    """0.4: three modules read os.environ directly, each with its own (or no) check."""
    readers = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        n = len(re.findall(r"os\.environ|getenv|os\.getenvb", text))
        if n:
            readers[path.relative_to(PACKAGE).as_posix()] = n
    assert readers == {"weights/env.py": 1}


def test_the_reader_keeps_the_dict_order(tmp_path):
    tensors = OrderedDict((f"k{i}", torch.full((2,), float(i))) for i in range(5))
    torch.save(tensors, tmp_path / "o.pth")
    assert list(read_state_dict(tmp_path / "o.pth")) == list(tensors)
