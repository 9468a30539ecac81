"""Configs of the residual adapter family: :class:`AdapterTrainConfig` (the CE-only adapter)
and :class:`CroftConfig` (CRoFT, both variants; see :mod:`croft.methods.croft.fit`)."""

from __future__ import annotations

from dataclasses import dataclass

from croft.errors import CroftError
from croft.methods.loop import TrainConfig

VARIANTS = ("official", "paper")
# (lambda1, lambda2) when unset; derivation: docs/deviations.md#paper-scales
VARIANT_LAMBDAS: dict[str, tuple[float, float]] = {
    "official": (15.0, 1000.0),
    "paper": (2.0, 1.0),
}
REDUCTIONS = ("setup1", "setup2")
#: ``lambda2_scaling``: ``none`` (λ2 as given) or ``temperature`` (the paper variant's
#: penalty weighted ``λ2 / τ²``, i.e. ``λ2 · s²`` at ``τ = 1/s``: the penalty on the energy
#: in units of ``1/τ``, the logit energy's at ``τ = 1/s``, so one λ2 grid means the same
#: strength at every temperature; docs/world-study.md, "World v4")
LAMBDA2_SCALINGS = ("none", "temperature")


@dataclass
class AdapterTrainConfig(TrainConfig):
    """The residual adapter's options on top of the shared :class:`TrainConfig` (CRoFT and the
    CE-only adapter; the authors' defaults). ``eval_ratio < 0``: use ``ratio`` at
    prediction time (likewise ``eval_ratio_text``). ``det_ratio``/``det_ratio_text``
    (``< 0``: unset) are the head's detection-view ratios (``AdapterHead.detection_view``)."""

    ratio: float = 0.2
    ratio_text: float = 0.5
    eval_ratio: float = -1.0
    eval_ratio_text: float = -1.0
    ensemble: bool = True
    det_ratio: float = -1.0  # < 0: detection uses the prediction ratios (D7: 0.5)
    det_ratio_text: float = -1.0  # (D7: 0.0)

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.ratio <= 1.0 or not 0.0 <= self.ratio_text <= 1.0:
            raise CroftError("ratio and ratio_text must lie in [0, 1]")
        if self.det_ratio > 1.0 or self.det_ratio_text > 1.0:
            raise CroftError("det_ratio and det_ratio_text must lie in [0, 1] (or < 0: unset)")


@dataclass
class CEAdapterConfig(AdapterTrainConfig):
    """The CE-only adapter. ``residual``: train ``W − I`` instead of ``W`` (the paper variant's
    parametrisation: weight decay then pulls ``W`` towards the identity, not towards 0); the
    same adapter at initialisation, a different decay. Off: the authors' adapter."""

    residual: bool = False  # train W − I: weight decay pulls W towards I (not 0)


@dataclass
class CroftConfig(AdapterTrainConfig):
    """CRoFT hyperparameters. Defaults: the authors' Setup-II PACS ViT-B/16 run.

    ``lambda1``/``lambda2`` left unset (``None``) take the variant's default
    (:data:`VARIANT_LAMBDAS`): ``official`` 15 / 1000 (the authors'), ``paper`` 2 / 1 (the
    same effective weights on the paper's per-sample scales, docs/deviations.md#paper-scales).
    A built config always holds numbers.
    """

    variant: str = "official"
    lambda1: float = None  # type: ignore[assignment]
    lambda2: float = None  # type: ignore[assignment]
    lambda_c: float = 1.0  # paper variant: weight of L_c = CE(z_I^c) in the adapter loss
    gen_step: int = 1
    wccf: bool = True
    worst_case_branch: bool = True
    energy_reduction: str = "setup2"
    energy_temperature: float = 1.0  # paper variant only
    align_term: bool = True  # paper variant: −λ1·disalign(adapted x^c, x̂) in the adapter loss
    lambda2_scaling: str = "none"  # paper variant: none, or temperature (penalty weight λ2 / τ²)

    def __post_init__(self) -> None:
        defaults = VARIANT_LAMBDAS.get(str(self.variant), VARIANT_LAMBDAS["official"])
        for key, default in zip(("lambda1", "lambda2"), defaults, strict=True):
            value = getattr(self, key)
            try:
                setattr(self, key, default if value is None else float(value))
            except (TypeError, ValueError):
                raise CroftError(f"option {key}={value!r} is not a valid float") from None

    def check(self) -> None:
        super().check()
        if self.variant not in VARIANTS:
            raise CroftError(f"variant {self.variant!r}: use one of {', '.join(VARIANTS)}")
        if self.energy_reduction not in REDUCTIONS:
            raise CroftError(
                f"energy_reduction {self.energy_reduction!r}: use one of {', '.join(REDUCTIONS)}"
            )
        if self.gen_step < 0:
            raise CroftError("gen_step must be >= 0")
        if self.lambda2_scaling not in LAMBDA2_SCALINGS:
            known = ", ".join(LAMBDA2_SCALINGS)
            raise CroftError(f"lambda2_scaling {self.lambda2_scaling!r}: use one of {known}")
        if self.lambda2_scaling != "none" and self.variant != "paper":
            raise CroftError("lambda2_scaling applies to the paper variant only (it has the "
                             "energy temperature)")  # fmt: skip

    @property
    def lambda2_effective(self) -> float:
        """The weight the penalty gets: ``λ2``, or ``λ2 / τ²`` with ``lambda2_scaling:
        temperature`` (:data:`LAMBDA2_SCALINGS`)."""
        if self.lambda2_scaling == "temperature":
            return self.lambda2 / (self.energy_temperature * self.energy_temperature)
        return self.lambda2

    def inner_steps(self) -> int:
        """Generator steps per batch (``gen_step``), bounded with ``epochs``."""
        return int(self.gen_step) + 1

    @property
    def covariate_rows(self) -> bool:
        """Official worst-case branch live: WCCF on, the switch on, and ``gen_step > 0``."""
        return self.wccf and self.worst_case_branch and self.gen_step > 0
