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
