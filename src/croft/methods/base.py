"""Methods and fitted heads.

A *method* fits a *head* on cached features. A head maps raw image features
``(N, D)`` to class logits ``(N, C)`` (already multiplied by the logit scale, ready
for softmax) and to an embedding ``(N, D')`` (L2-normalised, for KNN scores). It
also gives cosine-style similarities ``(N, C)`` for MCM. Heads are ``nn.Module``\\ s
whose ``state_dict`` plus a JSON-able ``spec()`` fully describe them, so they save
as safetensors + JSON (never pickles).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.registry import Registry


class FittedHead(nn.Module):
    """Base class of every fitted head. Subclasses register with :data:`HEADS`."""

    head_name: ClassVar[str] = ""

    def __init__(self, class_names: list[str], feature_dim: int, logit_scale: float) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.feature_dim = int(feature_dim)
        self.logit_scale = float(logit_scale)
        self.meta: dict[str, Any] = {}

    # --- what a subclass implements -------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, C)`` for raw image features ``x`` ``(N, D)``."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embedding ``(N, D')`` used by the KNN score."""
        return nn.functional.normalize(x, dim=-1)

    def similarities(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine-like similarities ``(N, C)`` (for MCM): ``logits / logit_scale`` by default."""
        return self.logits(x) / self.logit_scale

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(W, b)``, ``(C, D')`` and ``(C,)``, with ``logits(x) = embed(x) Wᵀ + b``, for heads
        whose logits are linear in their embedding (CLIP's text head: ``W = s · text``,
        ``b = 0``); ``None`` otherwise. Fitted detectors read it (ViM's origin, NegLabel's
        class embeddings)."""
        return None

    def spec(self) -> dict[str, Any]:
        """JSON-able constructor arguments (besides class names, dim, scale)."""
        return {}

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], class_names: list[str], feature_dim: int, logit_scale: float
    ) -> FittedHead:
        return cls(class_names, feature_dim, logit_scale, **spec)

    def zero_shot_point(self, zs: FittedHead) -> FittedHead:
        """The zero-shot head ``zs`` written in this head's family (WiSE's start ``θ₀``).

        Returns a new head of this class, shapes and spec whose ``state_dict`` reproduces
        zero-shot predictions, so that ``(1 − α)·θ₀ + α·θ`` is a path between the two.
        Heads that cannot express zero-shot (they need the text tower) keep this default,
        which refuses with one line.
        """
        able = [e.name for e in HEADS if e.obj.zero_shot_point is not FittedHead.zero_shot_point]
        raise CroftError(
            f"a {self.head_name!r} head cannot be interpolated with zero-shot; WiSE supports "
            f"{', '.join(sorted(able))} heads"
        )

    def require_same_text(self, own: torch.Tensor, zs: FittedHead) -> None:
        """Refuse ``zs`` unless its unit text features equal ``n(own)`` ``(C, D)``."""
        a = nn.functional.normalize(own.float(), dim=-1)
        b = getattr(zs, "text", torch.empty(0)).float().to(a.device)
        if a.shape != b.shape or not torch.allclose(a, b, atol=1e-5):
            raise CroftError(
                f"the zero-shot head's text features differ from the {self.head_name} head's; "
                "build the zero-shot head from the same text features with the same ensemble "
                "setting"
            )

    # --- shared -----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _param_dtype(self) -> torch.dtype:
        for t in list(self.parameters()) + list(self.buffers()):
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    def cast(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the head's device and in its dtype (heads accept any float input)."""
        ref = next(iter(list(self.buffers()) + list(self.parameters())), None)
        if ref is None:
            return x
        return x.to(device=ref.device, dtype=ref.dtype)

    def check_features(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``(N, D)`` input and cast it to the head's dtype and device."""
        if x.dim() != 2 or x.shape[1] != self.feature_dim:
            raise CroftError(
                f"features of shape {tuple(x.shape)} do not fit this head, which expects "
                f"(N, {self.feature_dim}); extract them with the backbone the head was fitted on"
            )
        ref = next(iter(list(self.parameters()) + list(self.buffers())), None)
        device = ref.device if ref is not None else x.device
        return x.to(device=device, dtype=self._param_dtype())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class indices ``(N,)``."""
        return self.logits(self.check_features(x)).argmax(dim=1)


HEADS: Registry[type[FittedHead]] = Registry("head")


def register_head(cls: type[FittedHead]) -> type[FittedHead]:
    HEADS.register(cls.head_name)(cls)
    return cls


@dataclass
class FitResult:
    """What a method returns: the selected head, the training history and, for methods
    trained by :func:`croft.methods.loop.run_epochs`, the ``selection`` record (see
    :func:`croft.methods.loop.selection_record` for its keys; empty for methods that do not
    train epochs)."""

    head: FittedHead
    history: list[dict[str, float]] = field(default_factory=list)
    selected_epoch: int | None = None
    selection: dict[str, Any] = field(default_factory=dict)


class FitFn(Protocol):
    def __call__(
        self,
        train: FeatureSet,
        val: FeatureSet | None,
        config: Any,
        *,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> FitResult: ...


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config dataclass and its fit function.

    ``batched``: the method's step on the batched engine (a
    :class:`croft.methods.croft.steps.BatchedMethod`) when it has one, else ``None``:
    grids of such a method train many members at once, the others one by one.
    """

    name: str
    config_cls: type
    fit: Callable[..., FitResult]
    summary: str
    batched: Any = None


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str, config_cls: type, summary: str, *, batched: Any = None
) -> Callable[[Callable], Callable]:
    """Decorator for a fit function ``fit(train, val, config, *, device, progress)``;
    ``batched``: the method's :class:`~croft.methods.croft.steps.BatchedMethod`, if any."""

    def deco(fn: Callable[..., FitResult]) -> Callable[..., FitResult]:
        METHODS.register(name, summary)(MethodSpec(name, config_cls, fn, summary, batched))
        return fn

    return deco


def make_config(config_cls: type, overrides: dict[str, Any] | None = None) -> Any:
    """Build ``config_cls`` from defaults plus ``overrides``, checking names and types.

    String values (from ``--set key=value``) are converted to the field's type. Old option
    names listed in the class's ``OPTION_ALIASES`` (``{old: (new, {old value: new value})}``)
    are accepted.
    """
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    kwargs: dict[str, Any] = {}
    aliases = getattr(config_cls, "OPTION_ALIASES", {})
    for key, value in overrides.items():
        if key in aliases and key not in fields:  # an old option name: its new name and value
            key, values = aliases[key]
            value = values.get(value, value) if isinstance(value, str) else value
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CroftError(
                f"unknown option {key!r}{hint} for {config_cls.__name__}; "
                f"valid: {', '.join(fields)}"
            )
        default = fields[key].default
        kwargs[key] = _check_type(key, _coerce(key, value, default), fields[key].type, default)
    cfg = config_cls(**kwargs)
    check = getattr(cfg, "check", None)
    if callable(check):
        check()
    return cfg


def _check_type(key: str, value: Any, annotation: Any, default: Any) -> Any:
    """``value`` if it fits a scalar field (``int``: a whole number, ``float``: a finite
    number, ``bool``/``str``: one), else one :class:`CroftError` line; ``None`` is kept
    for a field whose default is ``None``. Other annotations are not checked here."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if value is None and default is None:
        return value
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if kind in ("int", "float") and isinstance(value, str):  # "7" from a file or a caller
        with contextlib.suppress(ValueError):  # else refused below, as given
            value = int(value.strip()) if kind == "int" else float(value.strip())
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise CroftError(f"option {key} must be a whole number, got {shown}")
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CroftError(f"option {key} must be a number, got {shown}")
        if not math.isfinite(value):
            raise CroftError(f"option {key} must be a finite number, got {shown}")
    if kind == "bool" and not isinstance(value, bool):
        raise CroftError(f"option {key} must be true or false, got {shown}")
    if kind == "str" and not isinstance(value, str):
        raise CroftError(f"option {key} must be a string, got {shown}")
    return value


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        if isinstance(default, bool) and isinstance(value, str):
            pass
        else:
            return value
    text = str(value).strip()
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise CroftError(f"option {key}={text!r} is not a valid {type(default).__name__}") from None
    return value
