"""Trust, round two (issue 20), the files half continued: head and run folders appear whole
or not at all, no write through a symlink leaves ``--out``, image reads never block, and
``--out`` inside a dataset root is refused. CLI cases: exit 2, one stderr line, no
traceback, nothing written outside the target."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from croft.cli.main import main
from croft.errors import CroftError

TEMP_PREFIX = ".croft-tmp-"  # croft.fileio.TEMP_PREFIX, spelled out so the file imports anywhere

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def one_line(capsys, argv: list[str], sandbox: Path | None = None) -> str:
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


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, str]:
    """A tiny generated world and the shipped tiny CLIP: ``(config file, held-out domain)``."""
    from croft.world import TINY_CLIP_ARCH, generate_world, tiny_clip_checkpoint

    root = tmp_path_factory.mktemp("world")
    generate_world(root / "world", "tiny", seed=0)
    domain = sorted(p.name for p in (root / "world" / "images").iterdir())[0]
    cfg = root / "exp.yaml"
    cfg.write_text(
        f"""
name: atomic
backbone: openclip:{TINY_CLIP_ARCH}:{tiny_clip_checkpoint()}
data: {{root: {root / "world" / "images"}, layout: domainbed}}
held_out: [{domain}]
shots: 1
views: 1
seeds: [1]
batch_size: 64
progress: false
methods:
  - {{label: zeroshot, method: zeroshot}}
"""
    )
    return cfg, domain


def _argv(cfg: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(cfg), "--out", str(out), "--quiet", *extra]


# -- 4: whole head and run folders ---------------------------------------------------------------


def test_disk_full_between_head_files_leaves_a_run_that_resumes(
    world, tmp_path, capsys, monkeypatch
):
    import croft.methods.io as head_io
    from croft.report import collect_runs

    cfg, domain = world
    out = tmp_path / "out"
    real = head_io.atomic_write_text

    def full(path, text):  # noqa: ANN001
        if Path(path).name == "head.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(head_io, "atomic_write_text", full)
    line = one_line(capsys, _argv(cfg, out, "--no-report"))
    assert "No space left on device" in line and str(tmp_path) in line
    rdir = out / "runs" / "zeroshot" / f"{domain}_seed1"
    assert not rdir.exists() and _leftovers(out) == []  # nothing half-written remains
    monkeypatch.setattr(head_io, "atomic_write_text", real)
    assert main(_argv(cfg, out, "--no-report")) == 0
    assert (rdir / "head" / "head.json").is_file() and len(collect_runs(out)) == 1


def test_a_killed_writers_leftovers_are_removed_and_never_read(world, tmp_path):
    from croft.report import collect_runs

    cfg, domain = world
    out = tmp_path / "out"
    assert main(_argv(cfg, out, "--no-report")) == 0
    rdir = out / "runs" / "zeroshot" / f"{domain}_seed1"
    # what a kill after metrics.json but before the rename leaves (a pid that is gone)
    dead = rdir.parent / f"{TEMP_PREFIX}{rdir.name}.999999999.abc"
    shutil.copytree(rdir, dead)
    assert len(collect_runs(out)) == 1  # the leftover is never read as a run
    (rdir / "metrics.json").unlink()  # the run itself must be redone
    assert main(_argv(cfg, out, "--no-report")) == 0
    assert not dead.exists() and _leftovers(out) == []
    assert len(collect_runs(out)) == 1


def test_a_half_written_head_folder_of_an_older_croft_is_replaced(world, tmp_path):
    """The issue's state: head.safetensors without head.json, no metrics.json; every rerun
    refused ('is not empty and is not a croft head folder')."""
    cfg, domain = world
    out = tmp_path / "out"
    assert main(_argv(cfg, out, "--no-report")) == 0
    rdir = out / "runs" / "zeroshot" / f"{domain}_seed1"
    (rdir / "metrics.json").unlink()
    (rdir / "head" / "head.json").unlink()
    assert main(_argv(cfg, out, "--no-report")) == 0
    assert (rdir / "head" / "head.json").is_file() and (rdir / "metrics.json").is_file()


def test_atomic_folder_is_whole_or_absent(tmp_path):
    from croft.fileio import TEMP_PREFIX as PREFIX
    from croft.fileio import atomic_write_folder, remove_leftovers

    assert PREFIX == TEMP_PREFIX
    target = tmp_path / "f"

    def half(tmp: Path) -> None:
        (tmp / "a").write_text("1")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_folder(target, half)
    assert list(tmp_path.iterdir()) == []
    atomic_write_folder(target, lambda t: (t / "a").write_text("1"))
    (target / "mine.txt").write_text("keep")
    atomic_write_folder(target, lambda t: (t / "a").write_text("2"), keep_extra=True)
    assert (target / "a").read_text() == "2" and (target / "mine.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    live = tmp_path / f"{TEMP_PREFIX}f.{os.getppid()}.x"  # a live process's: kept
    dead = tmp_path / f"{TEMP_PREFIX}f.999999999.y"
    live.mkdir()
    dead.mkdir()
    assert remove_leftovers(target) == [dead] and live.is_dir()


# -- 5: no write through a symlink leaves --out ------------------------------------------------


def test_symlinked_head_inside_out_is_never_written_through(world, tmp_path):
    cfg, domain = world
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    assert main(_argv(cfg, out, "--no-report")) == 0
    rdir = out / "runs" / "zeroshot" / f"{domain}_seed1"
    shutil.rmtree(rdir / "head")
    (rdir / "head").symlink_to(outside, target_is_directory=True)
    (rdir / "metrics.json").unlink()
    assert main(_argv(cfg, out, "--no-report")) == 0
    assert list(outside.iterdir()) == []
    assert (rdir / "head").is_dir() and not (rdir / "head").is_symlink()


def test_symlinked_report_folder_is_refused_before_any_run(world, tmp_path, capsys):
    cfg, _domain = world
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "report").symlink_to(outside, target_is_directory=True)
    line = one_line(capsys, _argv(cfg, out))
    assert "outside" in line and str(out / "report") in line
    assert list(outside.iterdir()) == [] and not (out / "runs").exists()


def test_symlinked_plot_file_is_replaced_not_written_through(tmp_path):
    from croft import plotstyle

    plt = plotstyle.pyplot()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "fig.png").symlink_to(victim)
    fig = plt.figure()
    plotstyle.save(fig, tmp_path / "plots", "fig")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "plots" / "fig.png").is_symlink()


# -- 6a: image reads never block -----------------------------------------------------------------


def _folder_with(tmp_path: Path, special: str) -> Path:
    from PIL import Image

    root = tmp_path / "ds"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "a" / "0.png")
    if special == "fifo":
        os.mkfifo(root / "a" / "pipe.png")
    else:
        (root / "a" / "zero.png").symlink_to("/dev/zero")
    return root


def _finishes(call, root: Path, seconds: float) -> bool:
    """Whether ``call()`` returns within ``seconds`` (in a thread; a read blocked on a FIFO
    under ``root`` is released afterwards so the test process can end)."""
    import threading

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    done = not worker.is_alive()
    for fifo in root.rglob("pipe.png") if not done else []:  # unblock a stuck reader
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    return done


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
def test_hash_contents_never_opens_a_fifo_or_device(tmp_path, special):
    from croft.data import load_image, read_layout
    from croft.data.images import BadImageError

    root = _folder_with(tmp_path, special)
    index = read_layout(root, "folder")
    assert _finishes(lambda: index.file_identity(contents=True), root, 10)
    odd = next(p for p in root.rglob("*.png") if p.name != "0.png")
    with pytest.raises(BadImageError, match="not a regular file"):
        load_image(odd)


def test_extract_hash_contents_with_a_fifo_finishes(tmp_path, capsys):
    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module

    root = _folder_with(tmp_path, "fifo")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), ckpt)
    out = tmp_path / "f.safetensors"
    argv = ["extract", "--backbone", f"openclip:{TINY_VIT}:{ckpt}", "--root", str(root),
            "--layout", "folder", "--out", str(out), "--hash-contents", "--quiet",
            "--workers", "0"]  # fmt: skip
    codes: list[int] = []
    assert _finishes(lambda: codes.append(main(argv)), root, 120)
    assert codes == [0] and out.is_file()
    assert "skipped 1 undecodable image" in capsys.readouterr().err  # the FIFO, said so


def test_image_file_size_is_limited(tmp_path, monkeypatch):
    from PIL import Image

    from croft.data import load_image
    from croft.data.images import BadImageError

    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    monkeypatch.setenv("CROFT_MAX_IMAGE_FILE_BYTES", "10")
    with pytest.raises(BadImageError, match="CROFT_MAX_IMAGE_FILE_BYTES"):
        load_image(path)


# -- 10: --out inside a dataset root ------------------------------------------------------------


def test_out_inside_the_dataset_root_is_refused(world, capsys):
    from croft.experiments import load_experiment

    cfg, _domain = world
    data = Path(load_experiment(cfg).data.root)
    line = one_line(capsys, _argv(cfg, data / "zz_out"), sandbox=data)
    assert "inside the dataset root" in line and "zz_out" in line
    with pytest.raises(CroftError, match="inside the dataset root"):
        from croft.experiments.protocols import refuse_out_inside_data

        refuse_out_inside_data(load_experiment(cfg), data)


# -- smaller: disk-full lines name the path; a read-only complete cache is read, not rewritten


def test_disk_full_names_the_file_being_written(tmp_path):
    from croft.cli.main import os_error_line
    from croft.fileio import atomic_write_with

    target = tmp_path / "metrics.json"

    def full(path: Path) -> None:
        with open(path, "wb"):
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it

    with pytest.raises(OSError) as err:
        atomic_write_with(target, full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    line = os_error_line(err.value)
    assert str(target) in line and "disk is full" in line
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_cache_holding_every_shard_is_read_without_writing(tmp_path, monkeypatch):
    from PIL import Image

    import croft.fileio as fileio
    from croft.backbones import TINY_VIT, load_backbone
    from croft.backbones.openclip import open_clip_module
    from croft.data import read_layout
    from croft.features import extract_features

    root = tmp_path / "ds"
    (root / "a").mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (8, 8), (40 * k, 2, 3)).save(root / "a" / f"{k}.png")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), ckpt)
    bb = load_backbone(f"openclip:{TINY_VIT}:{ckpt}")
    cache = tmp_path / "cache"
    first = extract_features(bb, read_layout(root, "folder"), progress=False, cache_dir=cache)

    def read_only(path, *args, **kwargs):  # noqa: ANN001
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    # the tests run as root, so chmod cannot make the cache read-only: every write fails
    monkeypatch.setattr(fileio, "atomic_write_with", read_only)
    again = extract_features(bb, read_layout(root, "folder"), progress=False, cache_dir=cache)
    assert first is not None and again is not None
    assert torch.equal(first.features, again.features)
