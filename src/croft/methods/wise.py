"""WiSE-FT-style weight-space ensembles (Wortsman et al., CVPR 2022) of zero-shot and fitted heads.

For a fitted head ``θ₁`` and the zero-shot head, the zero-shot head is first written as
a head ``θ₀`` of the fitted head's family (its "zero point", below); the path is
``θ(α) = (1 − α)·θ₀ + α·θ₁`` over every tensor of the state dict (``α = 0`` and
``α = 1`` reproduce the ends exactly). Zero points:

* ``adapter`` (CRoFT, CE adapter): ``fc_i = fc_t = generator = I`` (text kept);
* ``clip_adapter``: bottleneck weights 0 (the output is then the zero-shot feature);
* ``tip_adapter``: ``α_tip = 0`` and ``keys = keys_init``, so the path moves the cache
  weight from 0 and the Tip-Adapter-F keys from their training-free values at once;
* ``linear_probe``: ``W = s · t`` (``t`` the zero-shot head's unit text), ``b = 0``;
* ``prompt_text`` (CoOp, DPLCLIP ``train_mean``): the zero-shot text features; the
  interpolation is in output (text-feature) space, renormalised in the head, since
  learned and hand-written prompts have different context shapes;
* ``zeroshot``: itself.

Each head family gives its zero point through :meth:`FittedHead.zero_shot_point`, so a new
head joins WiSE by implementing that method. Families whose head keeps its own frozen text
(adapter, clip_adapter, tip_adapter) need a zero-shot head built from the same text
features (same templates and ``ensemble``); otherwise :func:`zero_point` refuses. Heads
that need the text tower (CoCoOp, DPLCLIP ``image``) have no zero point here.

Unlike WiSE-FT, which fine-tunes the whole model, only the head's few weights move.

**Which α.** WiSE-FT reports the whole curve and α = 0.5; croft's default picks α on
source-validation accuracy (``search``), which on few-shot Setup-II data tends to α ≈ 1
(the fitted head), so a table should show both: the presets list ``wise`` (validation
α) and ``wise_a05`` (``search: false, alpha: 0.5``). Every fit with validation data
records the validation curve (``val_acc``, ``val_nll`` per α) in
``FitResult.selection["wise"]`` and ``head.meta["wise_curve"]``; :func:`wise_report`
gives the held-out curve (accuracy, energy AUROC).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from croft.errors import CroftDeprecationWarning, CroftError
from croft.features.files import FeatureSet
from croft.methods.base import METHODS, FitResult, FittedHead, make_config, register_method
from croft.methods.loop import check_val
from croft.methods.training import config_dict, parse_floats
from croft.methods.zeroshot import ZeroShotHead, zeroshot_head
from croft.overrides import parse_value
from croft.scores import energy
from croft.selection import validation_nll


@torch.no_grad()
def zero_point(fitted: FittedHead, zs: ZeroShotHead) -> FittedHead:
    """The zero-shot head written in ``fitted``'s family (:meth:`FittedHead.zero_shot_point`)."""
    if fitted.class_names != zs.class_names or fitted.feature_dim != zs.feature_dim:
        raise CroftError("the zero-shot and fitted heads must share class names and feature dim")
    head = fitted.zero_shot_point(zs)
    head.meta = {}
    return head


@torch.no_grad()
def interpolate(start: FittedHead, end: FittedHead, alpha: float) -> FittedHead:
    """``(1 − α)·start + α·end`` tensor by tensor (same head class and shapes)."""
    if type(start) is not type(end):
        raise CroftError(f"cannot interpolate a {start.head_name} head with a {end.head_name}")
    out = copy.deepcopy(end)
    a, b = start.state_dict(), end.state_dict()
    mixed = {}
    for key, tb in b.items():
        ta = a[key]
        if ta.shape != tb.shape:
            raise CroftError(f"tensor {key!r}: shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
        if tb.is_floating_point():
            mixed[key] = (1.0 - alpha) * ta.to(tb) + alpha * tb
        elif not torch.equal(ta, tb.to(ta.device)):
            raise CroftError(f"tensor {key!r} is not floating point and differs between ends")
        else:
            mixed[key] = tb
    out.load_state_dict(mixed)
    return out


def wise_path(zs: ZeroShotHead, fitted: FittedHead, alphas: Sequence[float]) -> list[FittedHead]:
    """Heads ``θ(α)`` for each ``α`` (``α = 0``: zero-shot, ``α = 1``: ``fitted``)."""
    start = zero_point(fitted, zs)
    heads = []
    for alpha in alphas:
        head = interpolate(start, fitted, float(alpha))
        head.meta = {**fitted.meta, "wise_alpha": float(alpha)}
        heads.append(head)
    return heads


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC with ID as the positive class (``croft.metrics.auroc`` when available)."""
    try:
        from croft.metrics import auroc as metrics_auroc  # type: ignore[import-not-found]
    except ImportError:
        metrics_auroc = None
    if metrics_auroc is not None:
        return float(metrics_auroc(id_scores, ood_scores))
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    return float(roc_auc_score(y, np.r_[id_scores, ood_scores]))


@torch.no_grad()
def wise_report(
    zs: ZeroShotHead,
    fitted: FittedHead,
    alphas: Sequence[float],
    test: FeatureSet,
    ood: FeatureSet | None = None,
) -> list[dict[str, float]]:
    """Accuracy on ``test`` (held-out domain) and energy AUROC (``test`` as ID vs ``ood``)
    along the path: one ``{"alpha", "acc", "auroc"}`` row per ``α``."""
    rows = []
    x = test.eval_features()
    for alpha, head in zip(alphas, wise_path(zs, fitted, alphas), strict=True):
        logits = head.logits(head.check_features(x))
        row = {"alpha": float(alpha)}
        row["acc"] = float((logits.argmax(1).cpu() == test.labels).float().mean())
        if ood is not None:
            s_ood = energy(head.logits(head.check_features(ood.eval_features())).double())
            row["auroc"] = auroc(energy(logits.double()).cpu().numpy(), s_ood.cpu().numpy())
        rows.append(row)
    return rows


@dataclass
class WiseConfig:
    """WiSE options: the base method, its options and the mixing coefficient."""

    base: str = "ce_adapter"
    # the base method's options, a mapping: {epochs: 10, lr: 0.01} (the older text
    # "epochs=10;lr=0.01" is still read, with a DeprecationWarning)
    base_options: str | dict[str, Any] = ""
    alpha: float = 0.5  # used when there is no search
    search: bool = True  # pick alpha on validation accuracy when validation is given
    # alpha values searched: a list [0, 0.5, 1] or the text "0,0.5,1"
    alpha_grid: str | list[float] = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"

    #: options whose value is a list (in YAML options such a list is the value, not a grid)
    LIST_OPTIONS: ClassVar[tuple[str, ...]] = ("alpha_grid",)

    def check(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise CroftError(f"alpha {self.alpha} must lie in [0, 1]")
        parse_floats(self.alpha_grid, "alpha_grid")
        parse_options(self.base_options, warn=False)


def parse_options(value: str | Mapping[str, Any], *, warn: bool = True) -> dict[str, Any]:
    """``base_options`` as a dict of the base method's options.

    A mapping (YAML, ``--set base_options={epochs: 10, lr: 0.01}``) is used as it is, and
    so is mapping text (``"{epochs: 10}"``, read with :func:`croft.overrides.parse_value`).
    The older text ``"epochs=10;lr=0.01"`` -> ``{"epochs": "10", "lr": "0.01"}`` (values
    stay text; the base config converts them) is deprecated: a DeprecationWarning when
    ``warn``.
    """
    hint = "give a mapping, e.g. base_options={epochs: 10, lr: 0.01}"
    if isinstance(value, str) and value.strip().startswith("{"):
        value = parse_value(value.strip(), "option base_options")
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise CroftError(f"option base_options: key {bad[0]!r} is not a name; {hint}")
        return dict(value)
    if not isinstance(value, str):
        raise CroftError(f"option base_options={value!r}: {hint}")
    out: dict[str, Any] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise CroftError(f"base_options entry {part!r}: {hint} (or write key=value;key=value)")
        out[key.strip()] = raw.strip()
    if out and warn:
        warnings.warn(
            f"base_options {value!r}: the key=value;key=value text is deprecated; write "
            f"base_options={{{', '.join(f'{k}: {v}' for k, v in out.items())}}}",
            CroftDeprecationWarning,
            stacklevel=2,
        )
    return out


@register_method(
    "wise",
    WiseConfig,
    "WiSE-FT: weight-space mix of zero-shot and a fitted head, alpha picked on validation",
)
def fit_wise(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: WiseConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Fit ``cfg.base``, then mix it with zero-shot (same text features and ensemble)."""
    check_val(train, val)
    if cfg.base == "wise":
        raise CroftError("base=wise is circular; choose a method such as ce_adapter")
    spec = METHODS.get(cfg.base)
    base_cfg = make_config(spec.config_cls, parse_options(cfg.base_options))
    fitted = spec.fit(train, val, base_cfg, device=device, progress=progress)
    head = fitted.head
    ensemble = bool(getattr(base_cfg, "ensemble", True))
    zs = zeroshot_head(train.class_names, train.require_text(), head.logit_scale, ensemble)
    zs = zs.to(device)
    use_val = val is not None and cfg.search
    alphas = parse_floats(cfg.alpha_grid, "alpha_grid") if use_val else [cfg.alpha]
    heads = wise_path(zs, head, alphas)
    history: list[dict[str, float]] = []
    best = (-1.0, 0)
    curve_alphas = parse_floats(cfg.alpha_grid, "alpha_grid") if val is not None else []
    for i, (alpha, h) in enumerate(zip(alphas, heads, strict=True)):
        rec = {"alpha": float(alpha)}
        if use_val and val is not None:
            rec["val_acc"] = _val_acc(h, val)
            if rec["val_acc"] > best[0]:
                best = (rec["val_acc"], i)
        history.append(rec)
    out = heads[best[1]]
    chosen = {"alpha": alphas[best[1]], "alpha_from": "validation" if use_val else "config"}
    curve = []
    if val is not None:
        for alpha, h in zip(curve_alphas, wise_path(zs, head, curve_alphas), strict=True):
            curve.append(
                {
                    "alpha": float(alpha),
                    "val_acc": _val_acc(h, val),
                    "val_nll": validation_nll(h, val),
                }
            )
    out.meta = {
        "method": "wise",
        "config": config_dict(cfg),
        "base": {"method": cfg.base, **head.meta},
        "selected": chosen,
        "wise_curve": curve,
    }
    selection = dict(fitted.selection or {})
    selection["wise"] = {**chosen, "curve": curve}
    return FitResult(out, fitted.history + history, fitted.selected_epoch, selection)


@torch.no_grad()
def _val_acc(head: FittedHead, val: FeatureSet) -> float:
    return float((head.predict(val.eval_features()).cpu() == val.labels).float().mean())
