"""Shared fixtures: one network per session, seeded deterministic weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# No test reaches the network: the Hub client (and so every download) starts offline. It reads
# HF_HUB_OFFLINE when imported; the `server` fixture turns it off around a test that serves files.
os.environ["HF_HUB_OFFLINE"] = "1"
if "huggingface_hub.constants" in sys.modules:  # imported before this file: set what it read
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

from pyiqa_oracle import build_reference_fr  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402
from weights_server import checkpoint_bytes, start_server  # noqa: E402

from topiq_loss import CFANetFR, TOPIQLoss  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# glibc hands blocks above its (adaptive) mmap threshold back to the kernel at free, and
# the next call page-faults them in afresh: the suite's many large temporaries cost about
# a third more system time that way (tests/test_parity, test_anchor, test_properties: 10.6
# -> 7.2 s). Read by each process's allocator at start, so this (in the controller, before
# xdist starts its workers) reaches the workers and the processes the tests start; the
# library itself changes no such setting (its CPU chunking, trunk.CPU_CHUNK_BYTES, is how
# it avoids the faults).
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 30))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(16 << 30))

# Under pytest-xdist (setup.cfg runs `-n auto`) each worker is one process per core:
# one torch thread each, and one in the processes the tests start (examples, DDP ranks,
# the CLI), so that no process spins OpenMP threads on a core another one is using (on
# a busy 2-core machine two threads made a small forward pass 5x slower than one).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """An example's ``--threads N`` sets torch's thread count for the rest of the process:
    put the suite's back after each test."""
    yield
    if torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)


@pytest.fixture(scope="session")
def seeded_state() -> dict[str, torch.Tensor]:
    return seeded_state_dict(CFANetFR().state_dict())


@pytest.fixture(scope="session")
def seeded_checkpoint(seeded_state) -> bytes:
    """The seeded weights as the bytes of an official-style ``{"params": ...}`` file."""
    return checkpoint_bytes(seeded_state)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory, seeded_checkpoint) -> Path:
    """The seeded (untrained) checkpoint on disk, for ``weights=PATH`` / ``--weights PATH``."""
    path = tmp_path_factory.mktemp("weights") / "seeded_untrained.pth"
    path.write_bytes(seeded_checkpoint)
    return path


@pytest.fixture(scope="session")
def net(seeded_state) -> CFANetFR:
    """Frozen CFANet-FR with seeded (untrained) weights. Do not modify in tests."""
    model = CFANetFR()
    model.load_state_dict(seeded_state, strict=True)
    return model.requires_grad_(False).eval()


@pytest.fixture(scope="session")
def unfused_net(net) -> CFANetFR:
    """The same network running the official modules (the reference's arithmetic)."""
    import copy

    model = copy.deepcopy(net)
    model.semantic_model.set_fused(False)
    return model


@pytest.fixture(scope="session")
def loss_fn(net) -> TOPIQLoss:
    return TOPIQLoss(net=net)


@pytest.fixture(scope="session")
def reference_net(seeded_state):
    """pyiqa's CFANet(use_ref=True) with the same weights, or skip."""
    ref = build_reference_fr()
    if ref is None:
        pytest.skip(
            "pyiqa (and timm) not installed: `pip install timm && pip install --no-deps "
            "pyiqa==0.1.16` to run the parity tests against the reference implementation"
        )
    ref.load_state_dict(seeded_state, strict=True)
    return ref.eval()


#: The official checkpoints' key lists; CI has ../shared beside the checkout.
REFERENCE_KEYS = Path(__file__).resolve().parents[2] / "shared" / "reference"


def official_keys(filename: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of ``../shared/reference/<filename>``; skips the test
    where the file is absent (CI has it)."""
    path = REFERENCE_KEYS / filename
    if not path.is_file():
        pytest.skip(f"{path} not found (CI has ../shared beside the checkout)")
    keys = {}
    for line in path.read_text().splitlines():
        name, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        keys[name] = (tuple(int(v) for v in shape.strip("[]").split(",") if v.strip()), dtype)
    return keys


def smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Natural-ish test images: smooth colour fields plus fine texture, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 8), max(2, w // 8), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.randn(n, 3, h, w, generator=g)
    return img.clamp(0, 1)


def distort(x: torch.Tensor, seed: int, level: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + level * torch.randn(x.shape, generator=g)).clamp(0, 1)


def point_hub_at(monkeypatch, endpoint: str, cache: Path) -> None:
    """What HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE=0 would have set had they been in the
    environment when huggingface_hub was imported (it reads them then, into its constants).
    tests/test_hub.py checks the variables themselves in a fresh interpreter."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "AGENT_HARNESSES_PATH", str(cache / "agent_harnesses.json"))  # not in HF_HOME


@pytest.fixture()
def server(monkeypatch, tmp_path_factory):
    """A weights HTTP server on 127.0.0.1 (see weights_server.py), stopped after the test; the
    Hub client talks to it, with a cache of its own, and TORCH_HOME is a fresh folder."""
    state, srv = start_server()
    point_hub_at(monkeypatch, f"http://127.0.0.1:{state.port}", tmp_path_factory.mktemp("hf_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    yield state
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def fresh_hub_state(monkeypatch):
    """Act as a new process for the hub: nothing checked yet, no mirror or pins set."""
    import topiq_loss.weights.hub as hub

    monkeypatch.setattr(hub, "_checked", {})
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    monkeypatch.delenv(hub.PINS_ENV, raising=False)


# The longest modules first (measured, a few to 90 s each on a busy 2-core machine): under
# pytest-xdist the workers then end together on short tests instead of one worker
# finishing mypy or the multi-process run alone. Modules move whole (their order inside
# is kept), so module fixtures are unaffected; the order is the same on every worker.
LONG_FIRST = [
    "test_distributed.py",
    "test_quality_gates.py",
    "test_inputs_fuzz.py",
    "test_accuracy.py",
    "test_compile.py",
    "test_reliability.py",
    "test_nr.py",
    "test_swin.py",
    "test_properties.py",
    "test_examples.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
