"""Linear probe (CLIP paper, Radford et al. 2021): logistic regression on frozen features.

Multinomial L2-regularised logistic regression (scikit-learn, L-BFGS) on the
L2-normalised image features ``f = n(x)``. Logits ``(N, C) = f Wᵀ + b`` are the
classifier's own (softmax-ready; the weight norm plays the role of the logit scale, and
``similarities`` divides them by the backbone's scale). The inverse regularisation ``C``
is chosen on validation accuracy over ``c_grid`` (warm-started path, smallest best ``C``),
never on test; without validation the config's ``c`` is used.

Deviations from the CLIP paper's probe: a fixed log grid instead of its parametric binary
search; the training rows are, by ``views``, every cached augmented view of every image
(``"all"``, default), the per-image mean of the normalised views (``"mean"``) or view 0
(``"first"``: the paper's un-augmented probe).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, FittedHead, register_head, register_method
from croft.methods.loop import check_val, resolve_logit_scale
from croft.methods.training import config_dict, parse_floats

VIEWS = ("all", "mean", "first")
DEFAULT_GRID = "0.001,0.003,0.01,0.03,0.1,0.3,1,3,10,30,100,300,1000"


@dataclass
class LinearProbeConfig:
    """Linear-probe options."""

    c: float = 1.0  # inverse L2 strength used when there is no search
    search: bool = True  # pick C on validation accuracy when validation features are given
    c_grid: str | list[float] = DEFAULT_GRID  # C values searched: [0.1, 1, 10] or "0.1,1,10"
    views: str = "all"  # all | mean | first
    max_iter: int = 1000
    logit_scale: float = -1.0  # only for similarities(); < 0: the backbone's
    dtype: str = "float32"

    #: options whose value is a list (in YAML options such a list is the value, not a grid)
    LIST_OPTIONS: ClassVar[tuple[str, ...]] = ("c_grid",)

    def check(self) -> None:
        if self.views not in VIEWS:
            raise CroftError(f"views {self.views!r}: use one of {', '.join(VIEWS)}")
        if self.c <= 0 or any(v <= 0 for v in parse_floats(self.c_grid, "c_grid")):
            raise CroftError("c and every c_grid value must be > 0")


@register_head
class LinearProbeHead(FittedHead):
    """Buffers ``weight`` ``(C, D)`` and ``bias`` ``(C,)``; logits ``n(x) Wᵀ + b``."""

    head_name = "linear_probe"

    def __init__(
        self, class_names: list[str], feature_dim: int, logit_scale: float, dtype: str = "float32"
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale)
        dt = getattr(torch, dtype)
        self.dtype_name = dtype
        self.register_buffer("weight", torch.zeros(len(class_names), feature_dim, dtype=dt))
        self.register_buffer("bias", torch.zeros(len(class_names), dtype=dt))

    def spec(self) -> dict[str, Any]:
        return {"dtype": self.dtype_name}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) @ self.weight.T + self.bias

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias

    @torch.no_grad()
    def zero_shot_point(self, zs: FittedHead) -> FittedHead:
        """``W = s · t`` (``t`` the zero-shot unit text), ``b = 0``."""
        head = copy.deepcopy(self)
        head.weight.copy_(zs.logit_scale * zs.text.to(head.weight))
        head.bias.zero_()
        return head


def probe_rows(train: FeatureSet, views: str) -> tuple[np.ndarray, np.ndarray]:
    """Training matrix ``(R, D)`` of normalised features and labels ``(R,)``."""
    f = F.normalize(train.features.double(), dim=-1)
    y = train.labels
    if f.dim() == 3:
        if views == "all":
            y = y.repeat_interleave(f.shape[1])
            f = f.reshape(-1, f.shape[-1])
        elif views == "mean":
            f = F.normalize(f.mean(1), dim=-1)
        else:
            f = f[:, 0]
    return f.numpy(), y.numpy()


def _fit_path(
    x: np.ndarray, y: np.ndarray, grid: list[float], max_iter: int, seed: int = 0
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=max_iter, warm_start=True, random_state=seed)
    out = []
    for c in sorted(grid):
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        coef, icpt = clf.coef_.copy(), clf.intercept_.copy()
        if coef.shape[0] == 1:  # binary problem: sklearn keeps one row
            coef, icpt = np.concatenate([-coef, coef]) / 2, np.concatenate([-icpt, icpt]) / 2
        out.append((c, coef, icpt))
    return out


@register_method(
    "linear_probe",
    LinearProbeConfig,
    "linear probe: logistic regression on normalised features, C picked on validation",
)
def fit_linear_probe(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: LinearProbeConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Fit the probe; with validation, every ``c_grid`` value is tried and the best kept."""
    train.require_labels()
    check_val(train, val)
    x, y = probe_rows(train, cfg.views)
    use_val = val is not None and cfg.search
    grid = parse_floats(cfg.c_grid, "c_grid") if use_val else [cfg.c]
    path = _fit_path(x, y, grid, cfg.max_iter)
    head = LinearProbeHead(
        train.class_names, train.dim, resolve_logit_scale(train, cfg.logit_scale), cfg.dtype
    )
    history: list[dict[str, float]] = []
    best: tuple[float, int] = (-1.0, 0)
    for i, (c, coef, icpt) in enumerate(path):
        rec = {"c": float(c)}
        if use_val and val is not None:
            with torch.no_grad():
                head.weight.copy_(torch.from_numpy(coef))
                head.bias.copy_(torch.from_numpy(icpt))
                acc = float((head.predict(val.eval_features()) == val.labels).float().mean())
            rec["val_acc"] = acc
            if acc > best[0]:
                best = (acc, i)
        history.append(rec)
    c, coef, icpt = path[best[1]]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef))
        head.bias.copy_(torch.from_numpy(icpt))
    head.meta = {
        "method": "linear_probe",
        "config": config_dict(cfg),
        "selected": {"c": float(c), "c_from": "validation" if use_val else "config"},
    }
    return FitResult(head.to(device), history, None)
