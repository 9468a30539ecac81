"""Shared fixtures: small simulated tasks (synthetic features, no network)."""

from __future__ import annotations

import pytest
import torch

from croft.simulate import LodoTask, SimConfig, Simulator

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SMALL = SimConfig(dim=32, classes=5, unseen_classes=4, shots=8, test_per_class=30)


@pytest.fixture(scope="session")
def small_task() -> LodoTask:
    return Simulator(SMALL).lodo(0, seed=1)


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """A private feature/world cache, and one torch thread (tiny models run fastest on
    one, and two threaded processes on a 2-core machine slow each other down badly)."""
    monkeypatch.setenv("CROFT_CACHE_DIR", str(tmp_path / "croft-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
