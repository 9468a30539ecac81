"""Replay every golden case of the authors' training step (float64, rtol 1e-6, atol 1e-9).

Cases come from ``tests/golden/croft-official`` (vendored; its README describes the
arrays), or from the directory in ``CROFT_GOLDEN_DIR`` when set, so other case sets can
be replayed. Each case is rebuilt from its ``cases.json`` settings alone. The step itself
is described in ``docs/authors-step.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from croft.methods.croft.core import adapter_forward
from croft.methods.croft.fit import CroftConfig, SingleStep

DEFAULT_DIR = Path(__file__).resolve().parent / "golden" / "croft-official"
GOLDEN_DIR = Path(os.environ.get("CROFT_GOLDEN_DIR", DEFAULT_DIR))
RTOL, ATOL = 1e-6, 1e-9


def _cases() -> list[str]:
    path = GOLDEN_DIR / "cases.json"
    if not path.is_file():
        return []
    return sorted(json.loads(path.read_text()))


def test_golden_cases_exist() -> None:
    assert _cases(), f"no golden cases found in {GOLDEN_DIR} (set CROFT_GOLDEN_DIR)"


def config_from_case(case: dict) -> CroftConfig:
    cfg = CroftConfig(
        variant="official",
        lambda1=case["lambda1"],
        lambda2=case["lambda2"],
        gen_step=case["gen_step"],
        wccf=case["WCCF"],
        worst_case_branch=case["covariate_rows_in_energy_penalty"],
        energy_reduction=case["energy_penalty_reduction"],
        ratio=case["ratio"],
        ratio_text=case["ratio_text"],
        lr=case["lr"],
        momentum=case["momentum"],
        weight_decay=case["weight_decay"],
        dtype=case["dtype"],
    )
    assert cfg.covariate_rows == case["covariate_rows_in_energy_penalty"]
    return cfg


@pytest.mark.parametrize("name", _cases())
def test_official_step_matches_golden(name: str) -> None:
    case = json.loads((GOLDEN_DIR / "cases.json").read_text())[name]
    data = np.load(GOLDEN_DIR / f"{name}.npz")
    cfg = config_from_case(case)
    dtype = getattr(torch, case["dtype"])
    t = torch.from_numpy(data["text_features"]).to(dtype)
    d = t.shape[1]
    scale = 100.0
    member = SingleStep(cfg, d, scale)  # the engine's official step, a batch of one
    records = []
    for step in range(case["steps"]):
        x = torch.from_numpy(data["train_features"][step]).to(dtype)
        y = torch.from_numpy(data["train_labels"][step]).long()
        records.append(member.step(x, y, t))
    fc_i, fc_t, gen = member.matrices()

    def close(actual, expected, what):
        np.testing.assert_allclose(
            np.asarray(actual),
            np.asarray(expected),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"{name}: {what}",
        )

    close([r.gen_losses for r in records], case["gen_losses"], "gen_losses")
    close([r.loss for r in records], data["loss"], "loss")
    close([r.loss_ce for r in records], data["loss_ce"], "loss_ce")
    close([r.loss1 for r in records], data["loss1"], "loss1")
    close([r.loss2 for r in records], data["loss2"], "loss2")
    close(fc_i, data["fc_i"], "fc_i")
    close(fc_t, data["fc_t"], "fc_t")
    close(gen, data["generator"], "generator")
    probe = torch.from_numpy(data["probe_features"]).to(dtype)
    with torch.no_grad():
        fwd = adapter_forward(probe, t, fc_i, fc_t, cfg.ratio, cfg.ratio_text)
        logits = scale * fwd.z_img @ fwd.z_txt.T
    close(logits, data["probe_logits"], "probe_logits")
    close(torch.logsumexp(logits, dim=1), data["probe_energy"], "probe_energy")
