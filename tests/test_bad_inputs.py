"""A bad-input campaign that stays: every case gets exit code 2 (1 for a bug), exactly one
stderr line, no traceback, nothing written outside the target, and no code from a
checkpoint ever runs (a marker file that a malicious pickle would create never appears).
"""

from __future__ import annotations

import json
import pickle
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.backbones import TINY_VIT, load_backbone
from croft.backbones.torchscript import read_state_dict
from croft.cli.main import main
from croft.data import check_layout, load_image, read_layout
from croft.data.images import BadImageError
from croft.errors import CroftError
from croft.features import FeatureSet, extract_features, load_features, save_features
from croft.features.extract import ViewSpec

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def one_line(capsys, argv: list[str], code: int = 2, sandbox: Path | None = None) -> str:
    """Run the CLI; assert the exit code, one stderr line, no traceback, and (with
    ``sandbox``) that nothing appeared in it. Returns the line."""
    before = _listing(sandbox) if sandbox is not None else None
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("croft: error: ")
    if sandbox is not None:
        assert _listing(sandbox) == before
    return lines[0]


# -- a checkpoint never runs code --------------------------------------------------------------


class _Evil:
    """Pickles as a call that would create ``marker`` when unpickled by a trusting loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _genuine_archive(path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model.register_buffer("steps", torch.arange(5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))
    return path


def _malicious_archive(tmp: Path, marker: Path) -> Path:
    """A genuine TorchScript archive whose data.pkl is replaced by a code-running pickle."""
    src = zipfile.ZipFile(_genuine_archive(tmp / "genuine.pt"))
    path = tmp / "ViT-B-16.pt"
    with zipfile.ZipFile(path, "w") as out:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/data.pkl"):
                data = pickle.dumps(_Evil(marker), protocol=2)
            out.writestr(name, data)
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    (root / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "cat" / "0.png")
    return root


def test_genuine_torchscript_archive_state_dict_matches_jit_load(tmp_path):
    path = _genuine_archive(tmp_path / "g.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.jit.load(str(path)).state_dict()
    got = read_state_dict(path)
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) and got[k].dtype == ref[k].dtype for k in ref)


@pytest.mark.parametrize("prefix", ["openai:", f"openclip:{TINY_VIT}:"])
def test_malicious_torchscript_archive_never_runs(tmp_path, capsys, dataset, prefix):
    marker = tmp_path / "PWNED"
    path = _malicious_archive(tmp_path, marker)
    with pytest.raises(CroftError, match="refused to load global"):
        load_backbone(prefix + str(path))
    line = one_line(
        capsys,
        ["extract", "--backbone", prefix + str(path), "--root", str(dataset), "--layout",
         "folder", "--out", str(tmp_path / "o" / "f.safetensors")],
    )  # fmt: skip
    assert "TorchScript archive" in line and "refused to load global io.open" in line
    assert not marker.exists()


def test_torchscript_module_with_custom_state_is_refused(tmp_path):
    class Stateful(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool]:
            return (self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
            self.w = state[0]
            self.training = state[1]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.script(Stateful()).save(str(tmp_path / "s.pt"))
    except Exception:  # noqa: BLE001 - this torch cannot script it; nothing to check
        pytest.skip("torch.jit cannot script a module with __setstate__ here")
    with pytest.raises(CroftError, match="custom state"):
        read_state_dict(tmp_path / "s.pt")


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-save"])
def test_malicious_pickle_checkpoint_never_runs(tmp_path, capsys, dataset, kind):
    marker = tmp_path / "PWNED"
    path = tmp_path / "weights.pt"
    if kind == "raw-pickle":
        path.write_bytes(pickle.dumps({"w": _Evil(marker)}))
    else:
        torch.save({"w": _Evil(marker)}, str(path))
    assert not marker.exists()
    line = one_line(
        capsys,
        ["extract", "--backbone", f"openclip:{TINY_VIT}:{path}", "--root", str(dataset),
         "--layout", "folder", "--out", str(tmp_path / "o" / "f.safetensors")],
    )  # fmt: skip
    assert "weights-only" in line
    assert not marker.exists()


# -- feature files: metadata, checksums ---------------------------------------------------------


def _features(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    fs = FeatureSet(
        features=torch.randn(6, 4, generator=g),
        labels=torch.tensor([0, 1, 0, 1, 0, 1]),
        class_names=["a", "b"],
        text_features=torch.randn(2, 4, generator=g),
        templates=["a photo of a {}."],
    )
    return save_features(fs, path)


def _rewrite_meta(path: Path, key: str, value: str) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"][key] = value
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("class_names", '"5"', "list of strings"),
        ("class_names", "[1, 2]", "list of strings"),
        ("logit_scale", '"abc"', "positive number"),
        ("logit_scale", "null", "positive number"),
        ("logit_scale", "-3.0", "positive number"),
        ("logit_scale", "abc", "not valid JSON"),
        ("extra", "[]", "JSON object"),
    ],
)
def test_feature_file_metadata_is_type_checked(tmp_path, capsys, key, value, match):
    path = _features(tmp_path / "f.safetensors")
    _rewrite_meta(path, key, value)
    with pytest.raises(CroftError, match=match):
        load_features(path)
    out = tmp_path / "head"
    line = one_line(
        capsys, ["fit", "--method", "zeroshot", "--train", str(path), "--out", str(out)]
    )
    assert match in line and not out.exists()


def test_flipped_bit_in_feature_file_is_an_error(tmp_path, capsys):
    path = _features(tmp_path / "f.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10  # inside the last tensor's bytes
    path.write_bytes(bytes(raw))
    line = one_line(capsys, ["fit", "--method", "zeroshot", "--train", str(path), "--out",
                             str(tmp_path / "head")])  # fmt: skip
    assert "corrupted" in line and "checksum" in line


# -- heads ------------------------------------------------------------------------------------


def _head_dir(tmp_path: Path, capsys) -> tuple[Path, Path]:
    feats = _features(tmp_path / "f.safetensors")
    head = tmp_path / "head"
    assert main(["fit", "--method", "zeroshot", "--train", str(feats), "--out", str(head)]) == 0
    capsys.readouterr()
    return head, feats


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: [m], "JSON object"),
        (lambda m: {k: v for k, v in m.items() if k != "feature_dim"}, "feature_dim"),
        (lambda m: {**m, "feature_dim": "four"}, "feature_dim"),
        (lambda m: {**m, "feature_dim": -4}, "feature_dim"),
        (lambda m: {**m, "logit_scale": "abc"}, "logit_scale"),
        (lambda m: {**m, "logit_scale": None}, "logit_scale"),
        (lambda m: {**m, "class_names": "ab"}, "class_names"),
        (lambda m: {**m, "head": 3}, "head"),
        (lambda m: {**m, "spec": [1]}, "spec"),
        (lambda m: {**m, "head": "no-such-head"}, "no-such-head"),
    ],
)
def test_malformed_head_json_is_one_line(tmp_path, capsys, edit, match):
    head, feats = _head_dir(tmp_path, capsys)
    meta = json.loads((head / "head.json").read_text())
    (head / "head.json").write_text(json.dumps(edit(meta)))
    line = one_line(capsys, ["eval", str(head), "--id", str(feats)], sandbox=tmp_path)
    assert match in line


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_damaged_head_weights_are_one_line(tmp_path, capsys, damage):
    head, feats = _head_dir(tmp_path, capsys)
    weights = head / "head.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-7])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * 64)
    else:
        weights.unlink()
    line = one_line(capsys, ["eval", str(head), "--id", str(feats)], sandbox=tmp_path)
    assert "head.safetensors" in line


def test_non_finite_head_is_never_saved(tmp_path):
    from croft.methods import METHODS, make_config, save_head

    fs = load_features(_features(tmp_path / "f.safetensors"))
    spec = METHODS.get("linear_probe")
    head = spec.fit(fs, None, make_config(spec.config_cls, {}), device="cpu", progress=False).head
    tensors = [t for t in head.state_dict().values() if t.is_floating_point()]
    assert tensors
    tensors[0].fill_(float("nan"))  # state_dict tensors share the head's storage
    with pytest.raises(CroftError, match=r"input features reach \|x\| = 3e\+38"):
        save_head(head, tmp_path / "a", input_max_abs=3e38)
    with pytest.raises(CroftError, match="learning rate"):
        save_head(head, tmp_path / "b", input_max_abs=2.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_nan_threshold_is_never_saved(tmp_path):
    from croft.methods import METHODS, make_config, save_head

    fs = load_features(_features(tmp_path / "f.safetensors"))
    spec = METHODS.get("zeroshot")
    head = spec.fit(fs, None, make_config(spec.config_cls, {}), device="cpu", progress=False).head
    with pytest.raises(CroftError, match="ood_threshold"):
        save_head(head, tmp_path / "a", ood_threshold={"value": float("nan")})
    assert not (tmp_path / "a").exists()


def test_fit_never_overwrites_a_users_folder(tmp_path, capsys):
    feats = _features(tmp_path / "f.safetensors")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": true}')
    line = one_line(
        capsys, ["fit", "--method", "zeroshot", "--train", str(feats), "--out", str(mine)]
    )
    assert "not a croft head folder" in line
    assert (mine / "config.json").read_text() == '{"mine": true}'
    assert _listing(mine) == {"config.json"}
    head, _ = _head_dir(tmp_path, capsys)  # an existing head folder may be refitted
    assert main(["fit", "--method", "zeroshot", "--train", str(feats), "--out", str(head)]) == 0


# -- outputs, devices, bugs --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["fit", "predict", "extract"])
def test_cuda_without_cuda_is_one_line(tmp_path, capsys, dataset, command, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    feats = _features(tmp_path / "f.safetensors")
    argv = {
        "fit": ["fit", "--train", str(feats), "--out", str(tmp_path / "h")],
        "predict": ["predict", str(tmp_path / "h"), str(dataset)],
        "extract": ["extract", "--backbone", "openai:x.pt", "--root", str(dataset), "--layout",
                    "folder", "--out", str(tmp_path / "f2.safetensors")],
    }[command]  # fmt: skip
    line = one_line(capsys, [*argv, "--device", "cuda"], sandbox=tmp_path)
    assert "CUDA is not available" in line


def test_extract_out_unwritable_fails_before_extraction(tmp_path, capsys, dataset, tiny_ckpts):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = tmp_path / "cache"
    line = one_line(
        capsys,
        ["extract", "--backbone", f"openclip:{TINY_VIT}:{tiny_ckpts[0]}", "--root", str(dataset),
         "--layout", "folder", "--out", str(blocker / "f.safetensors"), "--cache", str(cache)],
    )  # fmt: skip
    assert str(blocker) in line and not cache.exists()


def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line(capsys, ["world", "generate", str(blocker / "world")])
    assert str(blocker) in line


def test_unexpected_exception_is_one_line_and_says_bug(capsys, monkeypatch):
    import croft.cli.cmd_data as cmd_data

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cmd_data, "_check", boom)
    line = one_line(capsys, ["data", "check", ".", "--layout", "folder"], code=1)
    assert "this is a bug" in line and "CROFT_DEBUG=1" in line


# -- data: nothing stale, bounded, zero-byte ----------------------------------------------------


def test_replaced_image_is_extracted_again(tmp_path, tiny_ckpts):
    root = tmp_path / "ds"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (16, 16), (40 * k, 100, 30)).save(root / c / f"{k}.png")
    (root / "a" / "bad.png").write_bytes(b"")
    bb = load_backbone(f"openclip:{TINY_VIT}:{tiny_ckpts[0]}")
    index = read_layout(root, "folder")
    first = extract_features(bb, index, progress=False)
    assert first is not None and len(first) == 4
    Image.new("RGB", (16, 16), (250, 250, 0)).save(root / "a" / "0.png")  # replaced
    Image.new("RGB", (16, 16), (0, 0, 250)).save(root / "a" / "bad.png")  # repaired
    second = extract_features(bb, read_layout(root, "folder"), progress=False)
    assert second is not None and len(second) == 5 and second.extra["skipped"] == []
    row = [r.path for r in index.records].index("a/0.png")
    assert not torch.allclose(first.features[row], second.features[row])
    third = extract_features(bb, read_layout(root, "folder"), progress=False, hash_contents=True)
    assert third is not None and torch.equal(third.features, second.features)


def test_corrupted_shard_is_removed_and_reextracted(tmp_path, tiny_ckpts):
    root = tmp_path / "ds"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (16, 16), (1, 2, 3)).save(root / "a" / "0.png")
    bb = load_backbone(f"openclip:{TINY_VIT}:{tiny_ckpts[0]}")
    index = read_layout(root, "folder")
    ref = extract_features(bb, index, progress=False, cache_dir=tmp_path / "c")
    shard = next((tmp_path / "c").rglob("shard-00000.safetensors"))
    raw = bytearray(shard.read_bytes())
    raw[-2] ^= 0x01
    shard.write_bytes(bytes(raw))
    with pytest.raises(CroftError, match="corrupted"):
        extract_features(bb, index, progress=False, cache_dir=tmp_path / "c")
    assert not shard.exists()
    again = extract_features(bb, index, progress=False, cache_dir=tmp_path / "c")
    assert again is not None and ref is not None and torch.equal(again.features, ref.features)


def _png_header_claiming(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = _png_header_claiming(tmp_path / "bomb.png", 12000, 12000)
    assert bomb.stat().st_size < 300
    with pytest.raises(BadImageError, match="CROFT_MAX_IMAGE_PIXELS"):
        load_image(bomb)
    monkeypatch.setenv("CROFT_MAX_IMAGE_PIXELS", "abc")
    with pytest.raises(CroftError, match="not a number"):
        load_image(bomb)


def test_views_and_shots_are_bounded():
    from croft.data.fewshot import MAX_SHOTS, _check_shots

    for views in (0, 10**20, 1e20, 2.5):
        with pytest.raises(CroftError, match="views"):
            ViewSpec.train_views(views)
    with pytest.raises(CroftError, match="shots"):
        _check_shots(MAX_SHOTS + 1)


def test_data_check_flags_zero_byte_image_without_decoding(tmp_path, capsys, dataset):
    (dataset / "cat" / "empty.png").write_bytes(b"")
    assert any("empty (0 bytes)" in p for p in check_layout(dataset, "folder"))
    assert main(["data", "check", str(dataset), "--layout", "folder"]) == 1
    assert "empty (0 bytes)" in capsys.readouterr().out


def test_missing_inputs_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    one_line(capsys, ["fit", "--method", "zeroshot", "--train", str(missing), "--out",
                      str(tmp_path / "h")], sandbox=tmp_path)  # fmt: skip
    one_line(capsys, ["eval", str(tmp_path / "nohead"), "--id", str(missing)], sandbox=tmp_path)


def test_world_generate_never_replaces_the_working_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "precious.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    line = one_line(capsys, ["world", "generate", str(tmp_path), "--overwrite"], sandbox=tmp_path)
    assert "refusing to replace" in line
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "world.json").write_text("[1, 2]")  # a manifest that is not an object
    line = one_line(capsys, ["world", "generate", str(tmp_path / "w")], sandbox=tmp_path)
    assert "holds something else" in line


def test_regenerated_world_is_never_served_stale_features(tmp_path, tiny_ckpts):
    """The campaign's case: ``world generate --seed 1`` over seed 0, then extraction, gave a
    file byte-identical to seed 0's."""
    from croft.world import generate_world

    root = tmp_path / "w"
    bb = load_backbone(f"openclip:{TINY_VIT}:{tiny_ckpts[0]}")
    outs = []
    for seed in (0, 1):
        generate_world(root, "tiny", seed=seed)
        index = read_layout(root / "images", "domainbed")
        out = tmp_path / f"seed{seed}.safetensors"
        extract_features(bb, index, out=out, progress=False, cache_dir=tmp_path / "cache")
        outs.append(out)
    assert outs[0].read_bytes() != outs[1].read_bytes()
    assert not torch.equal(load_features(outs[0]).features, load_features(outs[1]).features)


def test_offline_local_backbones_and_extraction_never_touch_the_network(
    tmp_path, tiny_ckpts, dataset, monkeypatch
):
    """README: backbones load offline from local files (no socket is ever connected)."""
    import socket

    attempts: list[object] = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    archive = _genuine_archive(tmp_path / "g.pt")
    read_state_dict(archive)
    bb = load_backbone(f"openclip:{TINY_VIT}:{tiny_ckpts[0]}")
    fs = extract_features(bb, read_layout(dataset, "folder"), templates=["a {}."], progress=False)
    assert fs is not None and fs.text_features is not None
    assert attempts == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_traced_open_clip_archive_state_dict_matches_jit_load(tmp_path):
    """A random open_clip model traced as OpenAI's archives are (tracing takes seconds)."""
    from croft.backbones.openclip import open_clip_module

    oc = open_clip_module()
    torch.manual_seed(0)
    model = oc.create_model(TINY_VIT, force_quick_gelu=True).eval()
    example = {
        "encode_image": (torch.randn(1, 3, 32, 32),),
        "encode_text": (torch.zeros(1, 16, dtype=torch.long),),
    }
    torch.jit.trace_module(model, example).save(str(tmp_path / "traced.pt"))
    ref = torch.jit.load(str(tmp_path / "traced.pt")).state_dict()
    got = read_state_dict(tmp_path / "traced.pt")
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) and got[k].dtype == ref[k].dtype for k in ref)


def test_outputs_under_a_file_are_one_line(tmp_path, capsys):
    """Not-a-directory outputs (read-only ones fail the same way; the tests run as root, so
    they cannot make a folder read-only)."""
    head, feats = _head_dir(tmp_path, capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argvs = [
        ["fit", "--method", "zeroshot", "--train", str(feats), "--out", str(blocker / "h")],
        [
            "eval",
            str(head),
            "--id",
            str(feats),
            "--ood",
            f"o={feats}",
            "--out",
            str(blocker / "m.json"),
        ],  # fmt: skip
        ["data", "splits", str(blocker / "ds")],
    ]
    for argv in argvs:
        line = one_line(capsys, argv, sandbox=tmp_path)
        assert str(blocker) in line
