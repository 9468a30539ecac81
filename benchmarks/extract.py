"""Feature-extraction throughput: the full store path against the model alone.

Target (issue 3): the store path (decode + transform + DataLoader + encode + shard and
output writes) reaches at least 0.9 of the model-only forward pass (``encode_image`` on
pre-made tensors already on the device) at the same batch size and precision.

    python benchmarks/extract.py                                  # CPU, small counts
    python benchmarks/extract.py --device cuda --precision fp16 --images 4096 \\
        --batch-size 256 --workers 12

Backbones: a random-initialised open_clip ``ViT-B-16`` and croft's tiny test ViT, each
saved to a temporary checkpoint and loaded through ``load_backbone``. Images: generated
JPEGs of about 224-320 px (smooth colour fields with noise, so decoding costs what a
photo costs), in a ``folder`` layout. Timing does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from croft.backbones import TINY_VIT, load_backbone
from croft.backbones.openclip import open_clip_module
from croft.data import read_layout
from croft.features import extract_features
from croft.features.extract import autocast_for


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs of 224-320 px in ``root/<class>/``, 4 classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(224, 321, size=2))
        coarse = rng.random((6, 6, 3)) * 255
        field = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(field).astype(np.int16) + rng.integers(-20, 21, size=(h, w, 3))
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(backbone, count: int, batch: int) -> float:
    """Seconds to encode ``count`` pre-made images (on the device) in batches of ``batch``."""
    size = backbone.preprocess.image_size
    device = torch.device(backbone.device)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(device, backbone.dtype)
    with autocast_for(backbone):
        backbone.encode_image(x).cpu()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for start in range(0, count, batch):
        n = min(batch, count - start)
        with autocast_for(backbone):
            backbone.encode_image(x[:n]).cpu()
    sync(device)
    return time.perf_counter() - t0


def store_path(backbone, index, tmp: Path, batch: int, workers: int, run: int) -> float:
    """Seconds for a full, uncached extraction of ``index`` including the output file."""
    device = torch.device(backbone.device)
    sync(device)
    t0 = time.perf_counter()
    extract_features(
        backbone,
        index,
        cache_dir=tmp / f"store{run}",
        out=tmp / f"out{run}.safetensors",
        batch_size=batch,
        workers=workers,
        progress=False,
    )
    sync(device)
    return time.perf_counter() - t0


def key_costs(index) -> None:
    """The content-identity key (stat / sha256 per image) and the checksum of a shard."""
    from croft.features.files import tensor_digest

    for contents in (False, True, False, True):
        t0 = time.perf_counter()
        index.file_identity(contents=contents)
        dt = time.perf_counter() - t0
        mode = "sha256" if contents else "stat"
        print(f"file identity ({mode}): {1e6 * dt / len(index):.1f} us/image over {len(index)}")
    feats = torch.randn(1024, 512)
    t0 = time.perf_counter()
    tensor_digest({"features": feats, "ok": torch.ones(1024, dtype=torch.uint8)})
    print(f"shard checksum (1024 x 512 fp32): {1e3 * (time.perf_counter() - t0):.2f} ms")


def bench(arch: str, args: argparse.Namespace, tmp: Path, index) -> None:
    oc = open_clip_module()
    torch.manual_seed(0)
    model = oc.create_model(arch)
    ckpt = tmp / f"{arch}.pt"
    torch.save(model.state_dict(), ckpt)
    del model
    backbone = load_backbone(
        f"openclip:{arch}:{ckpt}", device=args.device, precision=args.precision
    )
    backbone.fingerprint()  # hash the weights once, outside the timings
    n, b = len(index), args.batch_size
    only, full = [], []
    for r in range(args.repeats):
        only.append(model_only(backbone, n, b))
        full.append(store_path(backbone, index, tmp, b, args.workers, r))
    t_only, t_full = statistics.median(only), statistics.median(full)
    print(
        f"{arch:>16}: model-only {n / t_only:9.1f} img/s | store path {n / t_full:9.1f} img/s "
        f"| ratio {t_only / t_full:.3f}  ({n} images, batch {b}, {args.precision}, "
        f"workers {args.workers}, median of {args.repeats})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["ViT-B-16", TINY_VIT])
    ap.add_argument("--images", type=int, default=96, help="generated images (default 96)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "-"
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device} "
        f"({gpu}), python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="croft-bench-") as name:
        tmp = Path(name)
        os.environ["CROFT_CACHE_DIR"] = str(tmp / "cache")  # weight hashes stay out of ~/.cache
        t0 = time.perf_counter()
        make_images(tmp / "images", args.images)
        index = read_layout(tmp / "images", "folder")
        print(f"generated {len(index)} JPEGs in {time.perf_counter() - t0:.1f} s")
        key_costs(index)
        for arch in args.arch:
            bench(arch, args, tmp, index)


if __name__ == "__main__":
    main()
