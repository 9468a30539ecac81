"""Methods: fit a head on cached features. Importing this package registers them all.

Families live in subpackages: ``croft/`` (CRoFT, the CE adapter, the batched engine),
``prompts/`` (CoOp, CoCoOp, DPLCLIP, LoCoOp), ``cache/`` (Tip-Adapter, Tip-Adapter-F); the
linear probe, CLIP-Adapter, WiSE and zero-shot are modules here, beside the one training
loop (``loop``, ``training``), the registry (``base``) and head I/O (``io``, ``saving``).
"""

from croft.methods import clip_adapter as _clip_adapter  # noqa: F401
from croft.methods import linear_probe as _linear_probe  # noqa: F401
from croft.methods import wise as _wise  # noqa: F401
from croft.methods import zeroshot as _zeroshot  # noqa: F401
from croft.methods.base import (
    HEADS,
    METHODS,
    FitResult,
    FittedHead,
    MethodSpec,
    make_config,
    register_head,
    register_method,
)
from croft.methods.cache import tip_adapter as _tip_adapter  # noqa: F401  (tip_adapter, tip_adapter_f)
from croft.methods.croft import fit as _croft  # noqa: F401  (registers croft, ce_adapter)
from croft.methods.croft.engine import fit_iter, fit_many
from croft.methods.io import load_head, save_head
from croft.methods.loop import TrainConfig
from croft.methods.prompts import cocoop as _cocoop  # noqa: F401
from croft.methods.prompts import coop as _coop  # noqa: F401
from croft.methods.prompts import dplclip as _dplclip  # noqa: F401
from croft.methods.prompts import locoop as _locoop  # noqa: F401
from croft.methods.saving import energy_threshold, fit_and_save, fit_method

__all__ = [
    "HEADS",
    "METHODS",
    "FitResult",
    "FittedHead",
    "MethodSpec",
    "TrainConfig",
    "energy_threshold",
    "fit",
    "fit_and_save",
    "fit_iter",
    "fit_many",
    "load_head",
    "make_config",
    "register_head",
    "register_method",
    "save_head",
]


def fit(method, train, val=None, *, device="cpu", progress=False, **options):  # noqa: ANN001, ANN201
    """Fit ``method`` (a registered name) with ``options`` overriding its config defaults.

    ``train``/``val`` are feature sets or feature files. The head's ``meta`` records the
    provenance that ``croft fit`` writes (config, history, ``selection``, prompts, backbone,
    and the OOD threshold when ``val`` is given), so ``save_head(result.head, dir)`` gives
    a directory :func:`croft.load` can predict with; :func:`fit_and_save` does both.
    """
    return fit_method(method, train, val, device=device, progress=progress, options=options)
