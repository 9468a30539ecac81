"""Each method's options, read from its config dataclass: name, type, default, meaning.

The meaning of a field comes, in this order, from ``field(metadata={"help": ...})``, the
comment on the field's line (``lr: float = 0.002  # step size``) or the comment lines just
above it, and else from a short glossary of options many methods share.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Any

GLOSSARY = {
    "epochs": "training epochs",
    "batch_size": "training batch size",
    "lr": "learning rate (peak, after warm-up)",
    "lr_scaling": "none (lr as given, set for logit scale 100) or logit_scale "
    "(lr x (100/s)^2 for SGD, x (100/s) for AdamW; s the backbone's logit scale; "
    "croft fit's default)",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "warmup_epochs": "epochs of constant warm-up learning rate",
    "warmup_lr": "learning rate during warm-up",
    "seed": "random seed of initialisation and batch order",
    "dtype": "float dtype of training (float32, float64, float16, bfloat16)",
    "ratio": "residual ratio of the image adapter (0: frozen features)",
    "ratio_text": "residual ratio of the text adapter",
    "ensemble": "average the logits of the prompt templates",
    "variant": "official (the authors' code) or paper (the paper's objective)",
    "lambda1": "weight of the covariate-generator term",
    "lambda2": "weight of the energy-gradient (EDR) penalty",
    "gen_step": "generator updates per batch",
    "n_ctx": "number of learned context vectors",
    "val_every": "validate (and so select) every k-th epoch and the last one (1: every epoch)",
    "val_max": "validate on a fixed class-stratified subsample of at most this many images "
    "(0: all)",
    "init_std": "std of the random context initialisation",
    "views": "how augmented views are used",
    "alpha": "mixing weight",
    "beta": "sharpness of the affinity",
    "optimizer": "optimiser: sgd",
    "adam_eps": "epsilon of AdamW",
    "selection": "epoch selection: val_acc (best source-validation accuracy)",
    "logit_scale": "logit scale s of the logits s*cos (< 0: the backbone's, from the feature file)",
    "select_epoch": "epoch selection: best (highest source-validation accuracy, earliest on "
    "ties), last, or best_after_warmup (best among epochs after the warm-up)",
    "eval_ratio": "image residual ratio at prediction time",
    "eval_ratio_text": "text residual ratio at prediction time (< 0: ratio_text)",
    "wccf": "generate worst-case covariate features (False: no generator)",
    "worst_case_branch": "train on the generated worst-case features as well",
    "energy_reduction": "how the EDR penalty reduces over samples (setup1 | setup2)",
    "energy_temperature": "temperature of the energy in the penalty",
    "reduction": "bottleneck reduction factor (D -> D/reduction)",
    "protocol": "default optimiser settings: original (the method's own paper/code) or "
    "croft_repo (the CRoFT repository's shared settings)",
    "det_ratio": "image residual ratio of the detection view (< 0: the prediction ratio)",
    "det_ratio_text": "text residual ratio of the detection view (< 0: the prediction one)",
}


@dataclass(frozen=True)
class OptionDoc:
    """One option: ``name``, ``type`` (as written), ``default`` (repr) and ``help``."""

    name: str
    type: str
    default: str
    help: str


def _field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the class source (trailing comment, else the block above)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and not tok.string.lstrip("#").strip().startswith("type:"):
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out: dict[str, str] = {}
    cls_node = ast.parse(source).body[0]
    for node in getattr(cls_node, "body", []):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = node.lineno
            if line in comments and lines[line - 1].lstrip()[:1] != "#":
                out[node.target.id] = comments[line]
                continue
            above, k = [], line - 1
            while k in comments and lines[k - 1].lstrip().startswith("#"):
                above.insert(0, comments[k])
                k -= 1
            if above:
                out[node.target.id] = " ".join(above)
    return out


def config_options(config_cls: type) -> list[OptionDoc]:
    """Every field of a config dataclass, in declaration order, with its meaning."""
    comments: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_field_comments(klass))
    try:  # defaults resolved at construction (a baseline's protocol, CRoFT's variant)
        built: Any = config_cls()
    except Exception:  # noqa: BLE001 - a config with required fields: the field defaults
        built = None
    out = []
    for f in dataclasses.fields(config_cls):
        if built is not None:
            default: Any = getattr(built, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        comment, gloss = comments.get(f.name, ""), GLOSSARY.get(f.name, "")
        help_ = str(f.metadata.get("help", ""))
        if not help_:
            help_ = f"{gloss} ({comment})" if gloss and comment else gloss or comment
        out.append(OptionDoc(f.name, str(typ), repr(default), help_))
    return out


def method_options(method: str) -> list[OptionDoc]:
    """The options of a registered method (``croft list methods``)."""
    from croft.methods import METHODS

    return config_options(METHODS.get(method).config_cls)


def format_options(method: str) -> str:
    """A readable block: ``name  type  default  meaning`` per option."""
    from croft.methods import METHODS

    spec = METHODS.get(method)
    rows = [["name", "type", "default", "meaning"]]
    rows += [[o.name, o.type, o.default, o.help or "-"] for o in method_options(method)]
    widths = [max(len(r[j]) for r in rows) for j in range(3)]
    lines = ["  ".join(r[j].ljust(widths[j]) for j in range(3)) + "  " + r[3] for r in rows]
    head = f"{method}: {spec.summary}\n  options (--set NAME=VALUE):\n"
    return head + textwrap.indent("\n".join(lines), "    ")
