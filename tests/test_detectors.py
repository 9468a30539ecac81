"""Fitted detectors: Mahalanobis and ViM against independent references (numpy/sklearn and
pytorch-ood 0.4.0 when installed), MCM against pytorch-ood, the sign of every score,
saved states round-tripping and refused when malformed, and score lists as configs
write them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from croft.detector_states import MAX_STATE_ELEMENTS, load_states, save_states
from croft.detectors import vim_default_dim
from croft.errors import CroftError
from croft.score_lists import ScoreSpec, score_specs
from croft.scores import SCORES, DetectorState, ScoreInputs, mcm


def gaussian_classes(
    n: int = 600, d: int = 16, c: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, d)`` features of ``c`` Gaussian classes with a shared random covariance, labels,
    and the class means."""
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(c, d, generator=g, dtype=dtype)
    mix = torch.randn(d, d, generator=g, dtype=dtype) / d**0.5
    y = torch.arange(n) % c
    x = means[y] + torch.randn(n, d, generator=g, dtype=dtype) @ mix
    return x, y, means


class LinearHead:
    """A stand-in head with a linear classifier ``logits = x Wᵀ + b``."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, names: list[str] | None = None):
        self.w, self.b = w, b
        self.class_names = names or [f"c{i}" for i in range(w.shape[0])]

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w, self.b

    def inputs(self, x: torch.Tensor) -> ScoreInputs:
        logits = x @ self.w.T + self.b
        return ScoreInputs(logits=logits, similarities=logits / 10, embeddings=x)


# --- Mahalanobis ----------------------------------------------------------------------------
def reference_mahalanobis(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Lee et al.'s M(x) with sklearn's EmpiricalCovariance on the class-centred features."""
    from sklearn.covariance import EmpiricalCovariance

    mus = np.stack([x[y == c].mean(0) for c in np.unique(y)])
    cov = EmpiricalCovariance(assume_centered=True).fit(x - mus[y])
    prec = np.linalg.pinv(cov.covariance_)
    d2 = np.stack([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in mus], axis=1)
    return -d2.min(1)


def test_mahalanobis_matches_sklearn_reference() -> None:
    x, y, _ = gaussian_classes()
    q = gaussian_classes(50, seed=1)[0] * 1.5
    det = SCORES.get("mahalanobis").detector().fit(ScoreInputs(embeddings=x), y)
    got = det.score(ScoreInputs(embeddings=q)).numpy()
    np.testing.assert_allclose(
        got, reference_mahalanobis(x.numpy(), y.numpy(), q.numpy()), rtol=1e-9
    )


def test_mahalanobis_few_shot_uses_the_pseudo_inverse() -> None:
    x, y, _ = gaussian_classes(n=12, d=16)  # 12 rows in 16 dimensions: singular covariance
    q = gaussian_classes(7, d=16, seed=2)[0]
    det = SCORES.get("mahalanobis").detector().fit(ScoreInputs(embeddings=x), y)
    assert det.state is not None and det.state.meta["rank"] == 12 - 4
    got = det.score(ScoreInputs(embeddings=q)).numpy()
    np.testing.assert_allclose(
        got, reference_mahalanobis(x.numpy(), y.numpy(), q.numpy()), rtol=1e-8
    )
    ridged = SCORES.get("mahalanobis").detector(ridge=0.1).fit(ScoreInputs(embeddings=x), y)
    assert ridged.state is not None and ridged.state.meta["rank"] == 16


def test_mahalanobis_agrees_with_pytorch_ood() -> None:
    pood = pytest.importorskip("pytorch_ood.detector")
    x, y, _ = gaussian_classes(dtype=torch.float32)
    q = gaussian_classes(80, seed=3, dtype=torch.float32)[0] * 1.3
    ref = pood.Mahalanobis(None).fit_features(x, y).predict_features(q)  # 0.5 d² under Σ_sum⁻¹
    det = SCORES.get("mahalanobis").detector().fit(ScoreInputs(embeddings=x.double()), y)
    got = det.score(ScoreInputs(embeddings=q.double()))
    # pytorch-ood's covariance is the un-normalised sum (+1e-6 I): its score is d² / (2M)
    torch.testing.assert_close(got.float(), -2 * x.shape[0] * ref, rtol=2e-4, atol=1e-3)
    assert torch.equal(got.argsort(), (-ref).argsort())


# --- ViM --------------------------------------------------------------------------------------
def reference_vim(x, logits, q, q_logits, u, dim):  # noqa: ANN001, ANN201 - numpy reference
    """ViM from its definition with sklearn's EmpiricalCovariance (uncentred about ``u``)."""
    from scipy.special import logsumexp
    from sklearn.covariance import EmpiricalCovariance

    ec = EmpiricalCovariance(assume_centered=True).fit(x - u)
    vals, vecs = np.linalg.eigh(ec.covariance_)
    ns = vecs[:, np.argsort(vals)[::-1][dim:]]
    alpha = logits.max(1).mean() / np.linalg.norm((x - u) @ ns, axis=1).mean()
    return logsumexp(q_logits, axis=1) - alpha * np.linalg.norm((q - u) @ ns, axis=1)


@pytest.mark.parametrize("bias", [False, True])
def test_vim_matches_reference(bias: bool) -> None:
    x, y, _ = gaussian_classes(d=12)
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 12, generator=g, dtype=torch.float64)
    b = (
        torch.randn(4, generator=g, dtype=torch.float64)
        if bias
        else torch.zeros(4, dtype=torch.float64)
    )
    head = LinearHead(w, b)
    q = gaussian_classes(40, d=12, seed=6)[0] * 1.4
    det = SCORES.get("vim").detector(dim=5).fit(head.inputs(x), y, None, head)
    assert det.state is not None
    u = (-(np.linalg.pinv(w.numpy()) @ b.numpy())) if bias else np.zeros(12)
    np.testing.assert_allclose(det.state.tensors["origin"].numpy(), u, rtol=1e-5, atol=1e-6)
    ref = reference_vim(x.numpy(), head.inputs(x).logits.numpy(), q.numpy(),
                        head.inputs(q).logits.numpy(), u, 5)  # fmt: skip
    got = det.score(ScoreInputs(**{**head.inputs(q).__dict__})).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_vim_agrees_with_pytorch_ood() -> None:
    pood = pytest.importorskip("pytorch_ood.detector")
    x, y, _ = gaussian_classes(d=24, dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    w, b = torch.randn(4, 24, generator=g), torch.randn(4, generator=g)
    head = LinearHead(w.double(), b.double())
    q = gaussian_classes(60, d=24, seed=8, dtype=torch.float32)[0] * 1.2
    ref = pood.ViM(None, d=10, w=w, b=b).fit_features(x, y).predict_features(q)
    det = SCORES.get("vim").detector(dim=10).fit(head.inputs(x.double()), y, None, head)
    got = det.score(head.inputs(q.double())).float()
    torch.testing.assert_close(got, -ref, rtol=1e-3, atol=1e-3)  # pytorch-ood: outlier score


def test_vim_dimension_rules() -> None:
    assert (vim_default_dim(2048), vim_default_dim(768), vim_default_dim(512)) == (1000, 512, 256)
    x, y, _ = gaussian_classes(n=20, d=64)  # 20 rows span at most 20 dimensions
    head = LinearHead(torch.randn(4, 64, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    det = SCORES.get("vim").detector().fit(head.inputs(x), y, None, head)
    assert det.state is not None and det.state.meta == {"dim": 10, "rank": 20}
    with pytest.raises(CroftError, match="vim: dim=30 leaves no ID residual.*use dim < 20"):
        SCORES.get("vim").detector(dim=30).fit(head.inputs(x), y, None, head)
    with pytest.raises(CroftError, match=r"vim: dim=64 must be an integer in \[1, 63\]"):
        SCORES.get("vim").detector(dim=64).fit(head.inputs(x), y, None, head)


# --- MCM --------------------------------------------------------------------------------------
def test_mcm_agrees_with_pytorch_ood() -> None:
    pood = pytest.importorskip("pytorch_ood.detector")
    g = torch.Generator().manual_seed(9)
    z, t = torch.randn(30, 16, generator=g), torch.randn(5, 16, generator=g)
    for temp in (1.0, 0.05):
        ref = pood.MCM(None, t, temperature=temp).predict_features(z)
        sims = F.normalize(z, dim=1) @ F.normalize(t, dim=1).T
        torch.testing.assert_close(mcm(sims, temp), -ref)


# --- every score: higher = more in-distribution ----------------------------------------------
def _toy_clip() -> tuple[LinearHead, ScoreInputs, torch.Tensor, ScoreInputs, torch.Tensor]:
    """Unit embeddings around 4 text directions (ID) and an ID-like / OOD-like query pair."""
    g = torch.Generator().manual_seed(11)
    text = F.normalize(torch.randn(4, 32, generator=g), dim=1)
    y = torch.arange(200) % 4
    x = F.normalize(text[y] + 0.3 * torch.randn(200, 32, generator=g), dim=1)
    head = LinearHead(20.0 * text, torch.zeros(4))
    q = torch.stack([F.normalize(text[1] + 0.05 * torch.randn(32, generator=g), dim=0),
                     F.normalize(torch.randn(32, generator=g), dim=0)])  # fmt: skip
    return head, head.inputs(x), y, head.inputs(q), text


def _word_encoder(text: torch.Tensor):  # noqa: ANN202
    """Prompts of class ``c<i>`` encode to the ID text direction ``i``; words ``w<i>`` to
    fixed random directions."""

    def encode(prompts: list[str]) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        table = torch.randn(64, text.shape[1], generator=g)
        words = [p.split()[-1].rstrip(".") for p in prompts]
        return torch.stack([text[int(w[1:])] if w[0] == "c" else table[int(w[1:])] for w in words])

    return encode


@pytest.mark.parametrize("name", sorted(SCORES.names()))
def test_every_score_ranks_id_above_ood(name: str, tmp_path) -> None:  # noqa: ANN001
    head, id_inputs, y, q, text = _toy_clip()
    words = tmp_path / "words.txt"
    words.write_text("\n".join(f"w{i}" for i in range(64)))
    params = {"knn": {"k": 3}, "neglabel": {"words": str(words), "n_negatives": 20, "groups": 2}}
    score = SCORES.get(name)
    missing = [n for n in score.needs if n in ScoreInputs.__dataclass_fields__ and n != "bank"
               and getattr(q, n) is None]  # fmt: skip
    if missing:  # e.g. local (patch) similarities: tested with the score's own inputs
        pytest.skip(f"{name} reads {missing}, which this toy does not build")
    det = score.detector(**params.get(name, {}))
    det.fit(id_inputs, y, text, head, encode_text=_word_encoder(text))
    s = det.score(q)
    assert s.shape == (2,) and s[0] > s[1], name


# --- NegLabel ---------------------------------------------------------------------------------
def test_neglabel_known_answer_and_mining(tmp_path) -> None:  # noqa: ANN001
    from croft.neglabel import mine_negatives, neglabel

    t = torch.eye(3)[:2]  # ID classes along e0, e1
    words = torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.1], [-1.0, 0.0, 0.2]])
    # distance = eta-quantile of -cos to the ID classes: word 3 and word 1 are farthest
    assert mine_negatives(t, words, 2, eta=0.5).tolist() == [3, 1]
    sims = torch.tensor([[0.9, 0.1], [0.2, 0.1]])
    emb = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.9]])
    neg = F.normalize(words[[3, 1]], dim=1)
    tau = 0.5
    got = neglabel(sims, emb, neg, torch.tensor([0, 1]), temperature=tau)
    e = F.normalize(emb, dim=1) @ neg.T
    pos = torch.exp(sims / tau).sum(1)
    want = 0.5 * (pos / (pos + torch.exp(e[:, 0] / tau)) + pos / (pos + torch.exp(e[:, 1] / tau)))
    torch.testing.assert_close(got, want)
    one = neglabel(sims, emb, neg, torch.tensor([0, 0]), temperature=tau)
    torch.testing.assert_close(one, pos / (pos + torch.exp(e / tau).sum(1)))


def test_neglabel_fit_excludes_class_names_dedupes_and_groups(tmp_path) -> None:  # noqa: ANN001
    head, id_inputs, y, _, text = _toy_clip()
    head.class_names = ["w0", "c1", "c2", "c3"]
    words = tmp_path / "words.txt"
    words.write_text("# comment\n" + "\n".join(f"w{i % 50}" for i in range(60)) + "\n\n")
    det = SCORES.get("neglabel").detector(words=str(words), n_negatives=30, groups=4)
    det.fit(id_inputs, y, text, head, encode_text=_word_encoder(text))
    st = det.state
    assert st is not None and st.meta["candidates"] == 49  # 50 distinct words, minus w0
    assert len(st.meta["words"]) == 30 and "w0" not in st.meta["words"]
    assert st.tensors["negatives"].shape == (30, 32)
    assert torch.bincount(st.tensors["groups"]).tolist() == [8, 7, 8, 7]
    with pytest.raises(CroftError, match="neglabel needs the backbone's text tower"):
        SCORES.get("neglabel").detector(words=str(words)).fit(id_inputs, y, text, head)
    with pytest.raises(CroftError, match="neither 'wordfreq' nor a file"):
        SCORES.get("neglabel").detector(words="nope.txt").fit(
            id_inputs, y, text, head, encode_text=_word_encoder(text)
        )


def test_wordfreq_word_list() -> None:
    pytest.importorskip("wordfreq")
    from croft.neglabel import load_words

    words = load_words("wordfreq", 2000)
    assert 1500 < len(words) <= 2000 and words[0] == "the" and all(w.isalpha() for w in words)


# --- saved states ------------------------------------------------------------------------------
def _fitted() -> tuple[dict, ScoreInputs]:
    head, id_inputs, y, q, text = _toy_clip()
    entries = ["energy", {"name": "knn", "k": 5}, "mahalanobis"]
    entries.append({"name": "vim", "dim": 8, "label": "vim8"})
    dets = {s.label: s.detector() for s in score_specs(entries)}
    for d in dets.values():
        d.fit(id_inputs, y, text, head)
    return dets, q


def test_states_round_trip(tmp_path) -> None:  # noqa: ANN001
    dets, q = _fitted()
    save_states(tmp_path, dets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detectors.json", "detectors.safetensors"]
    loaded = load_states(tmp_path, dim=32)
    assert sorted(loaded) == ["knn", "mahalanobis", "vim8"]  # stateless ones are not saved
    assert loaded["vim8"].params == {"dim": 8} and loaded["knn"].params == {"k": 5}
    for label, det in loaded.items():
        assert torch.equal(det.score(q), dets[label].score(q)), label
    assert load_states(tmp_path / "nothing") == {}


def test_states_are_checked_on_load(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import json

    import croft.detector_states as D

    dets, _ = _fitted()
    save_states(tmp_path, dets)
    with pytest.raises(CroftError, match=r"knn: bank has D=32, elsewhere 16"):
        load_states(tmp_path, dim=16)
    monkeypatch.setattr(D, "MAX_STATE_ELEMENTS", 100)
    with pytest.raises(CroftError, match="above the limit 100"):
        load_states(tmp_path)
    monkeypatch.setattr(D, "MAX_STATE_ELEMENTS", MAX_STATE_ELEMENTS)
    doc = json.loads((tmp_path / "detectors.json").read_text())
    doc["detectors"][0]["tensors"]["bank"] = [3, 32]
    (tmp_path / "detectors.json").write_text(json.dumps(doc))
    with pytest.raises(CroftError, match="do not belong together"):
        load_states(tmp_path)
    doc["detectors"][0].update(score="energy")
    (tmp_path / "detectors.json").write_text(json.dumps(doc))
    with pytest.raises(CroftError, match="not a fitted score's state"):
        load_states(tmp_path)
    (tmp_path / "detectors.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CroftError, match="not a readable safetensors file"):
        load_states(tmp_path)
    (tmp_path / "detectors.json").write_text('{"format": "other"}')
    with pytest.raises(CroftError, match="not a croft detector-state file"):
        load_states(tmp_path)


def test_unfitted_detector_refuses_to_score() -> None:
    with pytest.raises(CroftError, match="the mahalanobis score needs labelled ID features"):
        SCORES.get("mahalanobis").detector().score(ScoreInputs(embeddings=torch.randn(2, 3)))
    state = DetectorState({"means": torch.zeros(1, 3), "whitener": torch.eye(3)})
    det = SCORES.get("mahalanobis").detector()
    det.state = state
    torch.testing.assert_close(
        det.score(ScoreInputs(embeddings=torch.ones(1, 3))), torch.tensor([-3.0])
    )


# --- score lists --------------------------------------------------------------------------------
def test_score_specs_generic_form() -> None:
    specs = score_specs(
        ["energy", {"name": "knn", "k": 50}, {"name": "knn", "k": 5, "label": "knn5"}]
    )
    assert specs == [
        ScoreSpec("energy"),
        ScoreSpec("knn", {"k": 50}),
        ScoreSpec("knn", {"k": 5}, "knn5"),
    ]
    assert [s.to_json() for s in specs] == ["energy", {"name": "knn", "k": 50},
                                            {"name": "knn", "k": 5, "label": "knn5"}]  # fmt: skip
    assert score_specs(["knn"], {"knn": {"k": 2}})[0].params == {"k": 2}
    for bad, msg in [
        ([{"name": "knn", "kk": 5}], "score 'knn' has no parameter.* kk"),
        (["knn", {"name": "knn", "k": 3}], "'knn' is listed twice; give each entry its own label"),
        ([{"k": 3}], r"scores\[0\]: a mapping entry needs name"),
        (["nope"], "unknown score 'nope'"),
        ([3], r"scores\[0\]: 3: write a score name"),
    ]:
        with pytest.raises(CroftError, match=msg):
            score_specs(bad)


def test_config_reads_the_generic_form_and_the_old_knn_k() -> None:
    from croft.errors import CroftDeprecationWarning
    from croft.experiments.config import DataSpec, LodoConfig, MethodGrid

    base = {"name": "x", "backbone": "b", "data": DataSpec("r", "oodbench"),
            "methods": [MethodGrid("zs", "zeroshot")]}  # fmt: skip
    cfg = LodoConfig(**base, scores=["energy", {"name": "knn", "k": 50}, "vim"])
    cfg.check()
    assert [s.label for s in cfg.score_specs()] == ["energy", "knn", "vim"]
    assert cfg.score_specs()[1].params == {"k": 50}
    with pytest.warns(CroftDeprecationWarning, match="knn_k: 5 is deprecated"):
        old = LodoConfig(**base, scores=["energy", "knn"], knn_k=5)
    assert old.score_specs()[1] == ScoreSpec("knn", {"k": 5}) and old.knn_k == 1
    bad = LodoConfig(**base, scores=[{"name": "vim", "dimm": 3}])
    with pytest.raises(CroftError, match="scores: score 'vim' has no parameter"):
        bad.check()


# --- NegLabel end to end on the built-in world's tiny CLIP -------------------------------------
def test_neglabel_through_evaluate_on_the_tiny_world_clip(isolated_cache, tmp_path, monkeypatch):  # noqa: ANN001
    """The text tower comes from the head's backbone spec; mined words are cached on disk;
    the world's word vocabulary maps unknown words to one token, so they count once."""
    pytest.importorskip("open_clip")
    import croft.backbones
    import croft.evaluation as E
    from croft.backbones import load_backbone
    from croft.features.files import FeatureSet
    from croft.methods.zeroshot import zeroshot_head
    from croft.world import TINY_CLIP_ARCH, tiny_clip_checkpoint, world_preset

    spec = f"openclip:{TINY_CLIP_ARCH}:{tiny_clip_checkpoint()}"
    bb = load_backbone(spec)
    classes = list(world_preset("demo").id_classes)
    text = bb.encode_text([f"a photo of a {c}." for c in classes])
    head = zeroshot_head(classes, text, bb.logit_scale)
    head.meta["backbone_spec"] = spec
    g = torch.Generator().manual_seed(0)
    y = torch.arange(70) % len(classes)
    train = FeatureSet(text[y] + 0.2 * torch.randn(70, text.shape[1], generator=g), y, classes)
    test = FeatureSet(text[y] + 0.2 * torch.randn(70, text.shape[1], generator=g), y, classes)
    ood = FeatureSet(torch.randn(40, text.shape[1], generator=g), torch.full((40,), -1), classes)
    words = tmp_path / "words.txt"
    vocab = ["rocket", "kite", "mushroom", "cloud", "stripes", "sketch", "house", "tree"]
    words.write_text("\n".join([*vocab, "zzzunheard", "qqqunheard"]))
    entry = {"name": "neglabel", "words": str(words), "n_negatives": 6, "groups": 2}
    E._BACKBONES.clear()
    dets = E.fit_detectors(head, ["energy", entry], bank=train)
    meta = dets["neglabel"].state.meta
    assert meta["candidates"] == 7  # 10 words - house, tree (ID) - one of the two unknowns
    assert len(meta["words"]) == 6 and not {"house", "tree"} & set(meta["words"])
    assert (
        len(list((isolated_cache / "text_features").glob("*.safetensors"))) == 2
    )  # words, classes
    ev = E.evaluate(head, test, {"o": ood}, detectors=dets)
    assert ev.detection["o"]["neglabel"]["auroc"] > 0.5
    E._BACKBONES.clear()  # a second fit reads the cached words: no backbone is loaded
    monkeypatch.setattr(croft.backbones, "load_backbone", lambda *a, **k: 1 / 0)
    again = E.fit_detectors(head, [entry], bank=train)
    assert torch.equal(again["neglabel"].state.tensors["negatives"],
                       dets["neglabel"].state.tensors["negatives"])  # fmt: skip
