"""Shared fixtures: small simulated tasks (synthetic features, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from croft.simulate import LodoTask, SimConfig, Simulator

# One torch thread for the whole suite: the tests' tiny ops run fastest on one, and two
# threaded processes on a 2-core machine slow each other down many times over.
torch.set_num_threads(1)
# Experiments fit in this process unless a test asks for workers (tests/test_fit_workers.py):
# spawning interpreters for every tiny test grid would cost seconds each.
os.environ.setdefault("CROFT_FIT_WORKERS", "1")

SMALL = SimConfig(dim=32, classes=5, unseen_classes=4, shots=8, test_per_class=30)


@pytest.fixture(scope="session")
def small_task() -> LodoTask:
    return Simulator(SMALL).lodo(0, seed=1)


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """A private feature/world cache (``$CROFT_CACHE_DIR`` in a temporary folder)."""
    monkeypatch.setenv("CROFT_CACHE_DIR", str(tmp_path / "croft-cache"))
    return tmp_path / "croft-cache"


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> tuple[Path, Path]:
    """Two random-init checkpoints of the tiny test architecture (seeds 0 and 1), ``.pt``."""
    pytest.importorskip("open_clip")
    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module

    oc = open_clip_module()
    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = folder / f"tiny{seed}.pt"
        torch.save(oc.create_model(TINY_VIT).state_dict(), path)
        paths.append(path)
    return paths[0], paths[1]
