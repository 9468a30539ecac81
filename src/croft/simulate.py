"""A feature-space simulator: SYNTHETIC features for tests and the first demo.

Nothing here comes from images or a real encoder. It mimics what CRoFT sees:

* ``C`` seen classes with prototypes ``μ_c`` and ``U`` unseen (open-set) classes ``ν_k``,
  unit vectors in ``D`` dimensions;
* text features ``t_c = μ_c + text_noise·ε_c + m`` (imperfect prompts plus a shared
  modality offset ``m``), so zero-shot is good but not optimal;
* ``K`` domains, each a style offset ``s_d`` plus a domain-specific nuisance direction,
  so a held-out domain is a covariate shift;
* image feature ``x = μ_y + s_d + noise·ε``; augmented view ``v`` adds ``view_noise·ε_v``.

:func:`simulate_lodo` gives one leave-one-domain-out task: few-shot training and
validation sets from the source domains, the held-out domain's test set (closed-set
OOD generalisation) and unseen-class images from the held-out domain (open-set OOD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings (all sizes small enough for CPU tests)."""

    dim: int = 64
    classes: int = 7
    unseen_classes: int = 8
    domains: int = 4
    shots: int = 16
    val_per_class: int = 16
    test_per_class: int = 60
    ood_per_class: int = 30
    views: int = 4
    text_noise: float = 0.9
    modality_offset: float = 0.8
    domain_shift: float = 0.9
    nuisance: float = 0.6
    noise: float = 0.55
    view_noise: float = 0.15
    logit_scale: float = 50.0
    world_seed: int = 0


@dataclass
class LodoTask:
    """One leave-one-domain-out task on simulated features."""

    train: FeatureSet  # (N, V, D) few-shot, source domains
    val: FeatureSet  # (M, D) source-domain validation
    test: FeatureSet  # (T, D) held-out domain, seen classes
    ood: FeatureSet  # (O, D) held-out domain, unseen classes (labels -1)
    noise: FeatureSet  # (O, D) texture-like features near no class (labels -1)
    test_domain: str

    @property
    def ood_sets(self) -> dict[str, FeatureSet]:
        """The two open-set kinds: semantic shift and texture-like noise."""
        return {"unseen_classes": self.ood, "noise": self.noise}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class Simulator:
    """A fixed synthetic world (from ``cfg.world_seed``) to draw tasks from."""

    def __init__(self, cfg: SimConfig = SimConfig()) -> None:
        if cfg.domains < 2:
            raise CroftError("the simulator needs at least 2 domains for leave-one-domain-out")
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.world_seed)
        d = cfg.dim
        self.protos = _unit(torch.randn(cfg.classes, d, generator=g))
        self.unseen = _unit(torch.randn(cfg.unseen_classes, d, generator=g))
        offset = cfg.modality_offset * _unit(torch.randn(d, generator=g))
        eps = _unit(torch.randn(cfg.classes, d, generator=g))
        self.text = self.protos + cfg.text_noise * eps + offset
        self.shifts = cfg.domain_shift * _unit(torch.randn(cfg.domains, d, generator=g))
        self.nuisance_dirs = _unit(torch.randn(cfg.domains, d, generator=g))
        self.class_names = [f"class_{i}" for i in range(cfg.classes)]
        self.domain_names = [f"domain_{i}" for i in range(cfg.domains)]

    def sample(
        self,
        protos: torch.Tensor,
        labels: torch.Tensor,
        domain: int,
        views: int,
        g: torch.Generator,
    ) -> torch.Tensor:
        """Features ``(n, views, D)`` (``views=0``: ``(n, D)``) of ``labels`` in ``domain``."""
        cfg, n = self.cfg, labels.shape[0]
        nuisance = cfg.nuisance * torch.randn(n, 1, generator=g) * self.nuisance_dirs[domain]
        base = protos[labels] + self.shifts[domain] + nuisance
        base = base + cfg.noise * torch.randn(n, cfg.dim, generator=g) / cfg.dim**0.5 * 4
        if views == 0:
            return base
        jitter = cfg.view_noise * torch.randn(n, views, cfg.dim, generator=g) / cfg.dim**0.5 * 4
        return base[:, None, :] + jitter

    def _set(
        self,
        per_class: int,
        domains: list[int],
        views: int,
        g: torch.Generator,
        name: str,
        unseen: bool = False,
    ) -> FeatureSet:
        protos = self.unseen if unseen else self.protos
        k = protos.shape[0]
        feats, labels, doms = [], [], []
        for i, dom in enumerate(domains):
            # spread per-class counts over domains as evenly as possible
            count = per_class // len(domains) + (1 if i < per_class % len(domains) else 0)
            if count == 0:
                continue
            lab = torch.arange(k).repeat_interleave(count)
            feats.append(self.sample(protos, lab, dom, views, g))
            labels.append(torch.full_like(lab, -1) if unseen else lab)
            doms.append(torch.full_like(lab, dom))
        return FeatureSet(
            features=torch.cat(feats),
            labels=torch.cat(labels),
            domains=torch.cat(doms),
            class_names=list(self.class_names),
            domain_names=list(self.domain_names),
            text_features=self.text.clone(),
            templates=["a photo of a {}."],
            logit_scale=self.cfg.logit_scale,
            extra={"synthetic": True, "split": name, "world_seed": self.cfg.world_seed},
            source=f"<simulated {name}>",
        )

    def _noise(self, n: int, domain: int, g: torch.Generator) -> FeatureSet:
        """Texture-like features: the domain's style plus a random direction, no object."""
        cfg = self.cfg
        feats = self.shifts[domain] + 1.2 * _unit(torch.randn(n, cfg.dim, generator=g))
        labels = torch.full((n,), -1, dtype=torch.long)
        return FeatureSet(
            features=feats,
            labels=labels,
            domains=torch.full((n,), domain, dtype=torch.long),
            class_names=list(self.class_names),
            domain_names=list(self.domain_names),
            logit_scale=cfg.logit_scale,
            extra={"synthetic": True, "split": "noise"},
            source="<simulated noise>",
        )

    def lodo(self, test_domain: int, seed: int) -> LodoTask:
        """A leave-one-domain-out task; ``seed`` draws the samples, the world stays fixed."""
        cfg = self.cfg
        if not 0 <= test_domain < cfg.domains:
            raise CroftError(f"test_domain {test_domain} out of range [0, {cfg.domains - 1}]")
        g = torch.Generator().manual_seed(10_000 * seed + 17 * test_domain + 1)
        src = [d for d in range(cfg.domains) if d != test_domain]
        return LodoTask(
            train=self._set(cfg.shots, src, cfg.views, g, "train"),
            val=self._set(cfg.val_per_class, src, 0, g, "val"),
            test=self._set(cfg.test_per_class, [test_domain], 0, g, "test"),
            ood=self._set(cfg.ood_per_class, [test_domain], 0, g, "ood", unseen=True),
            noise=self._noise(cfg.ood_per_class * cfg.unseen_classes, test_domain, g),
            test_domain=self.domain_names[test_domain],
        )


def simulate_lodo(test_domain: int = 0, seed: int = 1, cfg: SimConfig = SimConfig()) -> LodoTask:
    """Shortcut: ``Simulator(cfg).lodo(test_domain, seed)``."""
    return Simulator(cfg).lodo(test_domain, seed)


def random_features(
    classes: int, per_class: int, dim: int, views: int = 1, seed: int = 0, scale: float = 100.0
) -> FeatureSet:
    """Gaussian features with no structure, for timings and exactness checks (not accuracy):
    ``(classes·per_class, views, dim)`` (or ``(N, dim)`` for one view), labels in class
    order, Gaussian ``(classes, dim)`` text features, logit scale ``scale``."""
    g = torch.Generator().manual_seed(seed)
    n = classes * per_class
    shape = (n, views, dim) if views > 1 else (n, dim)
    return FeatureSet(
        features=torch.randn(*shape, generator=g),
        labels=torch.arange(classes).repeat_interleave(per_class),
        class_names=[f"c{i}" for i in range(classes)],
        text_features=torch.randn(classes, dim, generator=g),
        logit_scale=scale,
    )
