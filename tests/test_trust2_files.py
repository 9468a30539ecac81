"""Trust, round two (issue 20), the files-and-file-system half: bounded tensors and context
lengths, nothing fetched from a local file, nothing stale, whole head and run folders,
no write outside ``--out``, no blocking reads, ``--out`` never inside a dataset.

Every CLI case exits 2 with one stderr line naming the file, no traceback and nothing
written outside its target; memory cases run in a subprocess under ``RLIMIT_AS``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import croft
from croft.backbones import TINY_VIT, load_backbone
from croft.cli.main import main
from croft.errors import CroftError

pytestmark = pytest.mark.usefixtures("isolated_cache")

SRC = Path(croft.__file__).resolve().parents[1]  # the croft under test, for subprocesses
#: Address space for the capped subprocesses: torch and open_clip load in about 3.5 GiB of
#: it, so materialising a 4 GiB tensor cannot fit, while refusing it before allocation does.
CAP_BYTES = 5 << 30


def _listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def one_line(capsys, argv: list[str], sandbox: Path | None = None) -> str:
    """Run the CLI in-process; exit 2, one stderr line, no traceback, nothing new in
    ``sandbox``. Returns the line."""
    before = _listing(sandbox) if sandbox is not None else None
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("croft: error: ")
    if sandbox is not None:
        assert _listing(sandbox) == before
    return lines[0]


def capped(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run the CLI in a subprocess under ``RLIMIT_AS = CAP_BYTES``; assert exit 2, one
    stderr line, no traceback, and a bounded time. Returns the line."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({CAP_BYTES}, {CAP_BYTES}))\n"
        "from croft.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    full = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
    )
    elapsed = time.monotonic() - start
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("croft: error: ")
    assert elapsed < timeout
    return lines[0]


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / c / "0.png")
    return root


# -- 1a: tensors materialised only within a size stated before allocation ----------------------


def _expanded_archive(path: Path) -> Path:
    """A TorchScript archive of a few kB whose buffer is a stride-(0, 0) (32768, 32768) view
    of one float: cloned, it would take 4 GiB."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1))
    model.register_buffer("w", torch.zeros(1).expand(32768, 32768))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(path))
    assert path.stat().st_size < 10_000
    return path


@pytest.mark.parametrize("prefix", ["openai:", f"openclip:{TINY_VIT}:"])
def test_stride0_torchscript_view_is_refused_in_bounded_memory(tmp_path, dataset, prefix):
    archive = _expanded_archive(tmp_path / "ViT-B-16.pt")
    out = tmp_path / "o" / "f.safetensors"
    line = capped(
        ["extract", "--backbone", prefix + str(archive), "--root", str(dataset),
         "--layout", "folder", "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert str(archive) in line and "stride-0 view" in line, line
    assert not out.exists()


def test_stride0_view_in_a_torch_save_checkpoint_is_refused(tmp_path, dataset):
    path = tmp_path / "w.pt"
    torch.save({"visual.proj": torch.zeros(1).expand(32768, 32768)}, path)
    line = capped(
        ["extract", "--backbone", f"openclip:{TINY_VIT}:{path}", "--root", str(dataset),
         "--layout", "folder", "--out", str(tmp_path / "o" / "f.safetensors"), "--quiet"],
    )  # fmt: skip
    assert str(path) in line and "stride-0 view" in line and "visual.proj" in line, line


def test_tensor_element_limit_is_checked_and_raisable(tmp_path, monkeypatch):
    from croft.backbones.torchscript import check_view, read_state_dict

    model = torch.nn.Sequential(torch.nn.Linear(40, 50))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(tmp_path / "m.pt"))
    monkeypatch.setenv("CROFT_MAX_TENSOR_ELEMENTS", "1000")
    with pytest.raises(CroftError, match="CROFT_MAX_TENSOR_ELEMENTS") as err:
        read_state_dict(tmp_path / "m.pt")
    assert "m.pt" in str(err.value) and "2000" in str(err.value)
    monkeypatch.setenv("CROFT_MAX_TENSOR_ELEMENTS", "2000")
    assert read_state_dict(tmp_path / "m.pt")["0.weight"].shape == (50, 40)
    # overlapping (not only stride-0) views are refused; permuted and sliced ones are fine
    with pytest.raises(ValueError, match="more than once"):
        check_view((4, 4), (1, 2), 0, 100, "t")
    check_view((4, 3), (1, 4), 0, 12, "t")
    check_view((2, 2), (8, 1), 2, 12, "t")
    with pytest.raises(ValueError, match="out of bounds"):
        check_view((2, 2), (8, 1), 3, 12, "t")


def _tiny_clip_copy(tmp_path: Path) -> Path:
    """A copy of the shipped tiny world CLIP (weights + open_clip_config.json)."""
    from croft.world import tiny_clip_checkpoint

    src = tiny_clip_checkpoint()
    folder = tmp_path / "clip"
    folder.mkdir()
    for f in src.parent.iterdir():
        shutil.copy2(f, folder / f.name)
    return folder / src.name


def _edit_sidecar(weights: Path, edit) -> None:
    side = weights.parent / "open_clip_config.json"
    doc = json.loads(side.read_text())
    edit(doc)
    side.write_text(json.dumps(doc))


def test_huge_sidecar_context_length_is_refused_in_bounded_memory(tmp_path, dataset):
    from croft.world import TINY_CLIP_ARCH

    weights = _tiny_clip_copy(tmp_path)
    _edit_sidecar(weights, lambda d: d["tokenizer"].update(context_length=300_000_000))
    line = capped(
        ["extract", "--backbone", f"openclip:{TINY_CLIP_ARCH}:{weights}", "--root",
         str(dataset), "--layout", "folder", "--out", str(tmp_path / "o" / "f.safetensors"),
         "--quiet", "--templates", "a {}."],
    )  # fmt: skip
    assert "open_clip_config.json" in line and "CROFT_MAX_CONTEXT_LENGTH" in line, line
    assert not (tmp_path / "o" / "f.safetensors").exists()


# -- 2: a local file never reaches the network -------------------------------------------------


def test_sidecar_naming_a_hub_text_model_is_refused_offline(tmp_path, capsys, dataset, monkeypatch):
    import socket

    from croft.backbones.openclip import open_clip_module

    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    torch.manual_seed(0)
    weights = tmp_path / "w" / "model.pt"
    weights.parent.mkdir()
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), weights)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {"hf_model_name": "bert-base-uncased", "hf_tokenizer_name": "bert-base"},
    }
    (weights.parent / "open_clip_config.json").write_text(
        json.dumps({"architecture": "hub-text-arch", "model_cfg": cfg})
    )
    start = time.monotonic()
    line = one_line(
        capsys,
        ["extract", "--backbone", f"openclip:hub-text-arch:{weights}", "--root", str(dataset),
         "--layout", "folder", "--out", str(tmp_path / "o" / "f.safetensors")],
        sandbox=weights.parent,
    )  # fmt: skip
    assert not (tmp_path / "o" / "f.safetensors").exists()
    assert time.monotonic() - start < 20
    assert "open_clip_config.json" in line and "hf_model_name" in line
    assert "--allow-download" in line
    assert attempts == []


# -- 3: nothing stale ---------------------------------------------------------------------------


def test_weights_rewritten_in_place_with_size_and_mtime_kept_are_hashed_again(tmp_path):
    from croft.backbones.hashing import file_sha256

    path = tmp_path / "w.bin"
    size = 2 << 20  # large enough to be cached
    path.write_bytes(b"A" * size)
    first = file_sha256(path)
    st = path.stat()
    time.sleep(0.05)  # past the file-system clock's tick
    path.write_bytes(b"B" * size)  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored; ctime moves on
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    assert file_sha256(path) != first
    assert file_sha256(path) == file_sha256(path)  # and cached again


def _swap_two_words(doc: dict) -> None:
    vocab = doc["tokenizer"]["vocab"]
    i, j = vocab.index("car"), vocab.index("boat")
    vocab[i], vocab[j] = vocab[j], vocab[i]


def test_sidecar_vocab_swap_changes_the_fingerprint(tmp_path):
    from croft.world import TINY_CLIP_ARCH

    weights = _tiny_clip_copy(tmp_path)
    spec = f"openclip:{TINY_CLIP_ARCH}:{weights}"
    before = load_backbone(spec)
    _edit_sidecar(weights, _swap_two_words)
    after = load_backbone(spec)
    assert before.weights_sha256() == after.weights_sha256()
    assert before.fingerprint_hash() != after.fingerprint_hash()
    assert "open_clip_config.json" in after.fingerprint()["config_files"]


def test_zero_shot_after_a_vocab_swap_is_recomputed_not_served_stale(tmp_path, capsys):
    from croft.report import collect_runs
    from croft.world import TINY_CLIP_ARCH, generate_world

    world = tmp_path / "world"
    generate_world(world, "tiny", seed=0)
    weights = _tiny_clip_copy(tmp_path)
    domains = sorted(p.name for p in (world / "images").iterdir())
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"""
name: vocab
backbone: openclip:{TINY_CLIP_ARCH}:{weights}
data: {{root: {world / "images"}, layout: domainbed}}
held_out: [{domains[0]}]
shots: 1
views: 1
seeds: [1]
batch_size: 64
progress: false
methods:
  - {{label: zeroshot, method: zeroshot}}
"""
    )
    out = tmp_path / "out"
    argv = ["run", str(cfg), "--out", str(out), "--quiet", "--no-report"]
    assert main(argv) == 0
    (first,) = collect_runs(out)
    _edit_sidecar(weights, _swap_two_words)
    capsys.readouterr()
    line = one_line(capsys, argv)
    assert "other data" in line and "--fresh" in line
    assert main([*argv, "--fresh"]) == 0
    (second,) = collect_runs(out)
    assert second["run_key"] != first["run_key"]
