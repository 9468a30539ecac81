"""croft.scores: sign of every score, known values, chunked KNN against brute force,
and the registry."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import croft.scores as scores_mod
from croft.errors import CroftError
from croft.scores import (
    SCORES,
    Score,
    ScoreInputs,
    compute_scores,
    energy,
    knn,
    max_logit,
    mcm,
    msp,
)

# row 0 is ID-like (one confident class), row 1 OOD-like (flat)
LOGITS = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
SIMS = torch.tensor([[0.9, 0.1, 0.1], [0.3, 0.3, 0.3]])


def brute_knn(q: torch.Tensor, bank: torch.Tensor, k: int, squared: bool) -> torch.Tensor:
    d = torch.cdist(F.normalize(q, dim=1), F.normalize(bank, dim=1))
    kth = d.topk(k, dim=1, largest=False).values[:, -1]
    return -(kth**2) if squared else -kth


def knn_toy() -> tuple[torch.Tensor, torch.Tensor]:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2]])
    queries = torch.tensor([[2.0, 0.05], [0.0, 1.0]])  # near the bank / orthogonal to it
    return queries, bank


# --- signs: an ID-like sample scores higher than an OOD-like one ------------------------------
@pytest.mark.parametrize(
    "score",
    [
        lambda: energy(LOGITS),
        lambda: energy(LOGITS, temperature=5.0),
        lambda: msp(LOGITS),
        lambda: max_logit(LOGITS),
        lambda: mcm(SIMS),
        lambda: mcm(SIMS, temperature=0.01),
        lambda: knn(*knn_toy()),
        lambda: knn(*knn_toy(), k=2, squared=True),
    ],
)
def test_sign_id_like_scores_higher(score: Callable[[], torch.Tensor]) -> None:
    s = score()
    assert s.shape == (2,)
    assert s[0] > s[1]


def test_sign_through_registry() -> None:
    q, bank = knn_toy()
    local = SIMS[:, None].expand(-1, 2, -1)  # two local features per image, as the global
    inputs = ScoreInputs(logits=LOGITS, similarities=SIMS, embeddings=q, bank=bank,
                         local_similarities=local)  # fmt: skip
    for name in ("energy", "gl_mcm", "knn", "max_logit", "mcm", "msp"):  # fitted: test_detectors
        s = SCORES.get(name).compute(inputs)
        assert s[0] > s[1], name


# --- known values ----------------------------------------------------------------------------
def test_energy_values() -> None:
    x = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(energy(x), torch.logsumexp(x, dim=1))
    manual = 2.0 * torch.log(torch.exp(x / 2.0).sum(dim=1))
    torch.testing.assert_close(energy(x, temperature=2.0), manual)
    # [10, 0, 0] -> 10 + log(1 + 2 e^-10); [1, 1, 1] -> 1 + log 3
    expected = torch.tensor([10 + math.log1p(2 * math.exp(-10)), 1 + math.log(3)])
    torch.testing.assert_close(energy(LOGITS), expected)


def test_msp_max_logit_mcm_values() -> None:
    torch.testing.assert_close(msp(torch.full((3, 4), 2.5)), torch.full((3,), 0.25))
    torch.testing.assert_close(msp(torch.tensor([[0.0, math.log(3.0)]])), torch.tensor([0.75]))
    torch.testing.assert_close(max_logit(LOGITS), torch.tensor([10.0, 1.0]))
    e9, e1 = math.exp(0.9), math.exp(0.1)
    torch.testing.assert_close(mcm(SIMS)[0], torch.tensor(e9 / (e9 + 2 * e1)))
    # T = 0.5 doubles the similarities before the softmax
    torch.testing.assert_close(mcm(SIMS, temperature=0.5), msp(SIMS * 2.0))
    torch.testing.assert_close(mcm(SIMS)[1], torch.tensor(1 / 3))


def test_integer_logits_are_accepted() -> None:
    torch.testing.assert_close(max_logit(torch.tensor([[1, 3, 2]])), torch.tensor([3.0]))


# --- KNN against brute force -----------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5, 8])  # 8 > bank_chunk_size
@pytest.mark.parametrize("squared", [False, True])
def test_knn_matches_brute_force_chunked(k: int, squared: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(23, 16, generator=g, dtype=torch.float64) * 3.0  # not normalised
    bank = torch.randn(31, 16, generator=g, dtype=torch.float64) * 0.5
    expected = brute_knn(q, bank, k, squared)
    got = knn(q, bank, k, squared=squared, chunk_size=7, bank_chunk_size=5)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # defaults (one chunk each way) agree too, and float32 within float32 precision
    torch.testing.assert_close(knn(q, bank, k, squared=squared), expected)
    got32 = knn(q.float(), bank.float(), k, squared=squared, chunk_size=7, bank_chunk_size=5)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-5, atol=1e-5)


def test_knn_chunks_bound_the_distance_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real = scores_mod._sq_dists

    def spy(q: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append((q.shape[0], b.shape[0]))
        return real(q, b)

    monkeypatch.setattr(scores_mod, "_sq_dists", spy)
    g = torch.Generator().manual_seed(1)
    q, bank = torch.randn(20, 8, generator=g), torch.randn(12, 8, generator=g)
    got = knn(q, bank, k=5, chunk_size=7, bank_chunk_size=5)
    assert max(n for n, _ in seen) == 7 and max(m for _, m in seen) == 5
    assert len(seen) == 3 * 3  # ceil(20/7) query chunks x ceil(12/5) bank chunks
    torch.testing.assert_close(got, brute_knn(q, bank, 5, False), rtol=1e-5, atol=1e-5)


def test_knn_k_equal_bank_size_and_exact_match() -> None:
    bank = torch.eye(3, dtype=torch.float64)
    q = torch.tensor([[5.0, 0.0, 0.0]], dtype=torch.float64)
    # nearest is the same direction (distance 0); the 3rd is at sqrt(2)
    torch.testing.assert_close(knn(q, bank, k=1), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(
        knn(q, bank, k=3, bank_chunk_size=2), -torch.tensor([2.0], dtype=torch.float64).sqrt()
    )
    torch.testing.assert_close(
        knn(q, bank, k=3, squared=True), torch.tensor([-2.0], dtype=torch.float64)
    )


def test_knn_empty_queries() -> None:
    assert knn(torch.empty(0, 4), torch.randn(3, 4)).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 4}, "k=4 exceeds the bank size 3; use k <= 3"),
        ({"k": 0}, "k=0 must be a positive integer"),
        ({"k": 1.5}, "k=1.5 must be a positive integer"),
        ({"chunk_size": 0}, "chunk_size=0 must be a positive integer"),
        ({"bank_chunk_size": -1}, "bank_chunk_size=-1 must be a positive integer"),
    ],
)
def test_knn_parameter_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(CroftError, match=match):
        knn(torch.randn(2, 4), torch.randn(3, 4), **kwargs)


def test_knn_shape_errors() -> None:
    with pytest.raises(CroftError, match="embeddings have dim 4 but the bank has dim 5"):
        knn(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(CroftError, match=r"bank has shape \(3,\), expected \(M, D\)"):
        knn(torch.randn(2, 4), torch.randn(3))
    with pytest.raises(CroftError, match="embeddings is a list, expected a torch.Tensor"):
        knn([[1.0, 0.0]], torch.randn(3, 2))


@pytest.mark.parametrize("fn", [energy, msp, max_logit, mcm])
def test_logit_scores_reject_bad_shapes(fn: Callable[..., torch.Tensor]) -> None:
    with pytest.raises(CroftError, match=rf"{fn.__name__}: .* has shape \(4,\), expected \(N, C\)"):
        fn(torch.randn(4))
    with pytest.raises(CroftError, match=r"shape \(4, 0\)"):
        fn(torch.randn(4, 0))


@pytest.mark.parametrize("fn", [energy, mcm])
@pytest.mark.parametrize("t", [0.0, -1.0, float("nan")])
def test_bad_temperature(fn: Callable[..., torch.Tensor], t: float) -> None:
    with pytest.raises(CroftError, match="temperature=.* must be > 0"):
        fn(LOGITS, temperature=t)


# --- registry -------------------------------------------------------------------------------
def test_registry_contents() -> None:
    assert set(SCORES.names()) >= {"energy", "gl_mcm", "knn", "max_logit", "mcm", "msp"}
    assert {"mahalanobis", "vim", "neglabel"} <= set(SCORES.names())
    assert all(isinstance(e.obj, Score) and e.summary for e in SCORES)
    assert SCORES.get("knn").needs == ("embeddings", "bank")
    assert SCORES.get("knn").params() == ["k", "squared", "chunk_size", "bank_chunk_size"]
    assert SCORES.get("energy").params() == ["temperature"]


def test_registry_unknown_name() -> None:
    known = "known: energy, gl_mcm, knn, mahalanobis"
    with pytest.raises(CroftError, match=f"unknown score 'enrgy'; {known}"):
        SCORES.get("enrgy")


def test_compute_matches_direct_calls() -> None:
    q, bank = knn_toy()
    inputs = ScoreInputs(logits=LOGITS, similarities=SIMS, embeddings=q, bank=bank)
    out = compute_scores(
        ["energy", "mcm", "knn", "msp"],
        inputs,
        {"energy": {"temperature": 2.0}, "knn": {"k": 2, "squared": True}},
    )
    assert list(out) == ["energy", "mcm", "knn", "msp"]
    torch.testing.assert_close(out["energy"], energy(LOGITS, 2.0))
    torch.testing.assert_close(out["mcm"], mcm(SIMS))
    torch.testing.assert_close(out["knn"], knn(q, bank, 2, squared=True))
    torch.testing.assert_close(out["msp"], msp(LOGITS))


def test_missing_input_is_named() -> None:
    with pytest.raises(CroftError, match=r"score 'knn' needs inputs.bank, which is missing"):
        SCORES.get("knn").compute(ScoreInputs(embeddings=torch.randn(2, 3)))
    with pytest.raises(CroftError, match=r"score 'mcm' needs inputs.similarities"):
        compute_scores(["mcm"], ScoreInputs(logits=LOGITS))


def test_unknown_params_and_stray_params() -> None:
    with pytest.raises(CroftError, match="score 'energy' has no parameter.* tempreature; known"):
        SCORES.get("energy").compute(ScoreInputs(logits=LOGITS), tempreature=2.0)
    with pytest.raises(CroftError, match="parameters given for 'knn', which is not among"):
        compute_scores(["energy"], ScoreInputs(logits=LOGITS), {"knn": {"k": 3}})
    with pytest.raises(CroftError, match="unknown score 'nope'"):
        compute_scores(["nope"], ScoreInputs(logits=LOGITS))


def test_layering_no_methods_import() -> None:
    src = Path(scores_mod.__file__).parent
    for name in ("scores.py", "metrics.py"):
        tree = ast.parse((src / name).read_text())
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        assert not [
            m
            for m in imported
            if m.startswith("croft.")
            and m
            not in (
                "croft.errors",
                "croft.registry",
                "croft.detectors",
                "croft.neglabel",
                "croft.score_lists",
                "croft.score_base",
                "croft.score_registry",
                "croft.scores_local",
            )
        ], name


def test_detectors_treat_every_score_alike() -> None:
    from croft.scores import SCORES, Detector, ScoreInputs, energy, knn

    g = torch.Generator().manual_seed(0)
    bank = torch.randn(20, 8, generator=g)
    emb, logits = torch.randn(5, 8, generator=g), torch.randn(5, 3, generator=g)
    inputs = ScoreInputs(logits=logits, similarities=logits / 100, embeddings=emb)
    names = ["energy", "knn", "max_logit", "mcm", "msp"]  # every score: test_detectors.py
    dets = {n: SCORES.get(n).detector(**({"k": 3} if n == "knn" else {})) for n in names}
    assert all(isinstance(d, Detector) for d in dets.values())
    assert [n for n, d in dets.items() if d.needs_fit] == ["knn"]
    with pytest.raises(CroftError, match="knn score needs a bank"):
        dets["knn"].score(inputs)
    for d in dets.values():  # one call for all: stateless detectors ignore the ID data
        d.fit(ScoreInputs(embeddings=bank), torch.zeros(20, dtype=torch.long))
    torch.testing.assert_close(dets["knn"].score(inputs), knn(emb, bank, k=3), rtol=0, atol=0)
    torch.testing.assert_close(dets["energy"].score(inputs), energy(logits), rtol=0, atol=0)
    assert torch.equal(SCORES.get("knn").detector().fit(bank).score(inputs), knn(emb, bank))
    with pytest.raises(CroftError, match="no parameter"):
        SCORES.get("energy").detector(k=3)
