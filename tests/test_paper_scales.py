"""The paper variant's default weights put every loss term on one scale at initialisation.

Setup-II-shaped features: C = 7 classes (PACS), D = 512, a batch of 32, with CLIP-like
geometry (zero-shot accuracy ~0.9, image–text cosines ~0.37 for the true class vs ~0.31,
same-class image cosines ~0.75 vs ~0.57 across classes). Derivation of the weights:
docs/deviations.md#paper-scales.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from croft.methods.croft.core import (
    adapt_image,
    adapt_text,
    adapter_forward,
    official_generator_loss,
    per_sample_energy_grad_sq,
    same_label_mask,
)
from croft.methods.croft.fit import (
    VARIANT_LAMBDAS,
    CroftConfig,
    SingleStep,
    paper_covariate,
    paper_disalign,
)
from croft.methods.text import eps_normalize as n

C, D, B = 7, 512, 32


def setup2_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw image features ``(B, D)``, labels ``(B,)`` and raw class text features ``(C, D)``.

    Images: a class-aligned text direction, a shared image-modality direction, a class
    prototype and per-image noise; texts: the class direction, a text-modality direction
    (cosine 0.5 with the image one: CLIP's modality gap) and noise.
    """
    g = torch.Generator().manual_seed(seed)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)

    t, m_img, proto = unit(C, D), unit(D), unit(C, D)
    m_txt = F.normalize(0.5 * m_img + 0.866 * unit(D), dim=0)
    y = torch.arange(B) % C
    x = (0.04 / 0.3) * t[y] + 0.8 * m_img + 0.35 * proto[y] + 0.6 * unit(B, D)
    text = 0.55 * t + 0.8 * m_txt + 0.3 * unit(C, D)
    return 3.0 * x, y, 5.0 * text


def paper_components(cfg: CroftConfig, scale: float, seed: int = 0) -> dict[str, float]:
    """Every weighted term of both paper-variant losses at initialisation (W = G = I)."""
    x, y, t = setup2_batch(seed)
    eye = torch.eye(D, dtype=torch.float64)
    z = adapt_image(x, eye, cfg.ratio)
    zt = adapt_text(t, eye, cfg.ratio_text)
    xc = paper_covariate(x, eye)
    zc = adapt_image(xc, eye, cfg.ratio)
    sq = per_sample_energy_grad_sq(
        torch.cat([n(x), xc]), t, eye, eye, cfg.ratio, cfg.ratio_text, cfg.energy_temperature
    )
    return {
        "ce": float(F.cross_entropy(scale * z @ zt.T, y)),
        "gen/ce_cov": float(F.cross_entropy(scale * zc @ zt.T, y)),
        "gen/lambda1*disalign": cfg.lambda1 * float(paper_disalign(zc, z, y)),
        "adapter/lambda_c*ce_cov": cfg.lambda_c * float(F.cross_entropy(scale * zc @ zt.T, y)),
        "adapter/lambda1*align": cfg.lambda1 * float(paper_disalign(zc, n(x), y)),
        "adapter/lambda2*(Le+Le_c)": cfg.lambda2 * float(sq[:B].mean() + sq[B:].mean()),
    }


def test_batch_is_setup2_shaped() -> None:
    x, y, t = setup2_batch()
    cos = n(x) @ n(t).T
    acc = float((cos.argmax(1) == y).double().mean())
    m = same_label_mask(y, torch.float64)
    same = float(((n(x) @ n(x).T) * m).sum() / m.sum())
    assert 0.8 <= acc < 1.0
    assert 0.3 < float(cos[torch.arange(B), y].mean()) < 0.45
    assert 0.65 < same < 0.85


@pytest.mark.parametrize("scale", [100.0, 17.8])
def test_paper_defaults_put_every_term_within_one_order_of_magnitude(scale: float) -> None:
    cfg = CroftConfig(variant="paper")
    assert (cfg.lambda1, cfg.lambda2) == VARIANT_LAMBDAS["paper"] == (2.0, 1.0)
    comp = paper_components(cfg, scale)
    values = [abs(v) for v in comp.values()]
    assert max(values) / min(values) < 10.0, comp
    # the per-sample squared energy-gradient norm itself: ~0.1-0.25 per term
    assert 0.05 < comp["adapter/lambda2*(Le+Le_c)"] / cfg.lambda2 / 2 < 0.3


@pytest.mark.parametrize("scale", [100.0, 17.8])
def test_official_weights_on_paper_terms_are_off_scale(scale: float) -> None:
    """The old defaults (15, 1000) on the paper's terms: the penalty dwarfs the CE."""
    comp = paper_components(CroftConfig(variant="paper", lambda1=15.0, lambda2=1000.0), scale)
    assert comp["adapter/lambda2*(Le+Le_c)"] > 100.0  # hundreds, against a CE of 0.2-1.2
    values = [abs(v) for v in comp.values()]
    assert max(values) / min(values) > 100.0


def test_paper_disalignment_is_about_C_times_the_official() -> None:
    """Same-pair mean (paper) vs N²-mean (official) at init: ratio ≈ C (here within 20 %)."""
    x, y, t = setup2_batch()
    eye = torch.eye(D, dtype=torch.float64)
    fwd = adapter_forward(x, t, eye, eye, 0.2, 0.5)
    _, zc_off = official_generator_loss(fwd.z_img, fwd.z_txt, y, eye, 100.0, 15.0)
    official = float((same_label_mask(y, torch.float64) * (zc_off @ fwd.z_img.T)).mean())
    paper = float(paper_disalign(adapt_image(paper_covariate(x, eye), eye, 0.2), fwd.z_img, y))
    ratio = paper / official
    assert 0.8 * C < ratio < 1.2 * C
    # so λ1 = 2 on the paper's mean ≈ λ1 = 15 on the official one at C = 7
    assert abs(2.0 * paper - 15.0 * official) < 0.2 * 15.0 * official


def test_variant_defaults_and_explicit_values() -> None:
    assert (CroftConfig().lambda1, CroftConfig().lambda2) == (15.0, 1000.0)
    cfg = CroftConfig(variant="paper", lambda1="5", lambda2=0)  # strings from --set
    assert (cfg.lambda1, cfg.lambda2) == (5.0, 0.0)


def test_align_term_moves_the_adapter_towards_zero_shot() -> None:
    """With only the restored term on, one step changes the image adapter, and only it."""
    x, y, t = setup2_batch()
    x, t = x[:, :16].contiguous(), t[:, :16].contiguous()
    ends = {}
    for on in (True, False):
        cfg = CroftConfig(
            variant="paper",
            gen_step=1,
            lambda_c=0.0,
            lambda2=0.0,
            align_term=on,
            lr=0.1,
            dtype="float64",
        )
        member = SingleStep(cfg, 16, 100.0)
        with torch.no_grad():
            member.params.mats["generator"][0].normal_(
                0.0, 0.3, generator=torch.Generator().manual_seed(1)
            )
        member.step(x, y, t)
        ends[on] = [m.clone() for m in member.matrices()]
    assert not torch.equal(ends[True][0], ends[False][0])  # image adapter moved
    torch.testing.assert_close(ends[True][1], ends[False][1], rtol=0, atol=0)  # text: no
