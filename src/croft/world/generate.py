"""Render the downstream world and write it in the usual dataset layouts.

``generate_world(out, preset="demo", seed=0)`` writes::

    out/world.json                      manifest (written last: marks a complete world)
    out/images/<domain>/<class>/<img>.png        ID images; ``out/images`` is a DomainBed root
    out/test_on_<domain>.json           Dassl/CoOp split (PACS-style root ``out``):
                                        {"train"|"val"|"test": [[relpath, label, classname]]},
                                        relpath relative to images/, test = that domain,
                                        train/val = the other domains (per class and domain
                                        the last ``val_fraction`` of images go to val)
    out/ood_classes/<domain>/<class>/<img>.png   held-out object classes (semantic shift)
    out/ood_textures/<kind>/<img>.png            textures and noise (DTD-like)
    out/captions.json                   {path relative to out: caption}

Every image comes from its own random stream ``(seed, set, domain, class, index)``, so a
seed gives the same world in any order, and the folder is reused when its manifest
matches (same version, config and seed).

World v2 (``preset="study"``) also writes ``out/tints.json`` (``{relpath: tint index}``
for every object image), ``out/colours.json`` (``{relpath: main colour name}``) and renders
the extra target domains (sketch) too. The manifest's ``layout.shortcut`` names the cue,
its rate and each class's cue value (``croft.world.config.SHORTCUT_COLOURS``). Per (class,
domain) images ``0 .. n_train-1`` are train, the next ``n_val`` val and the last
``test_per_class`` test; ``test_on_<h>.json`` trains and validates on the train and val
images of the other leave-one-out domains (never the extra ones) and tests on ``h``'s
test images; ``test_on_<extra>.json`` trains on every leave-one-out domain. Use the
``oodbench`` layout (the split files): ``images/<domain>`` holds all three splits, so the
DomainBed view of ``images`` would test on shortcut-carrying (v3: noisily labelled)
train/val images too. The style-matched open set of held-out style ``h`` is the folder
``ood_classes/<h>``.

World v3 (``preset="study-v3"``, v2 with source label noise) also writes
``out/shapes.json``: ``{relpath: class drawn}`` for every ID image whose drawn object is
not its label's (train/val only); the manifest's ``layout.label_noise`` names the rate.
World v4 (``preset="study-v4"``) is v3 with a shortcut rate per source style; the
manifest's ``layout.shortcut.rate_by_style`` names them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from croft.errors import CroftError
from croft.fileio import parse_json
from croft.world.captions import describe
from croft.world.config import SHORTCUT_COLOURS, WorldConfig, world_preset
from croft.world.render import TINTS, render_object, render_texture

__all__ = [
    "WorldImage",
    "generate_world",
    "generator_digest",
    "iter_world",
    "read_world",
    "split_of",
]

MANIFEST = "world.json"
TINTS_FILE = "tints.json"
COLOURS_FILE = "colours.json"
_SET_ID, _SET_OOD, _SET_TEX, _SET_TINT, _SET_COLOUR, _SET_NOISE = 1, 2, 3, 4, 5, 6
SHAPES_FILE = "shapes.json"
#: World v1's generator digest, frozen: v1 images are pinned bit for bit by a golden test
#: (tests/test_world.py), so edits that add v2 leave v1 worlds (and their caches) valid.
_V1_GENERATOR = "3fa5d6308fcec4ab"
#: The generator digest each world version's manifests record, frozen once the version's
#: images were pinned bit for bit by a golden test (v1: tests/test_world.py, v2 and v3:
#: tests/test_world_v3.py), so that edits elsewhere in the generator keep generated worlds
#: and their feature caches valid. A change that moves a pinned image, or changes what a
#: world folder holds (split files, manifest layout), must change the golden hash or the
#: layout test and this digest together. v2: the digest of the last generator before v3;
#: v3: the one the world study's v3 world was generated with; v4: the one that added v4.
_FROZEN_GENERATORS = {
    "1": _V1_GENERATOR,
    "2": "7c17d009cefa5f10",
    "3": "fe2a1a5d61ee8976",
    "4": "e283dc3d5439ba20",  # v4: the generator that added it (tests/test_world_v4.py)
}


@dataclass
class WorldImage:
    """One rendered image and what it shows."""

    image: np.ndarray  # uint8 (H, W, 3)
    kind: str  # "id", "ood_class" or "texture"
    name: str  # class name or texture kind
    domain: str  # style ("" for textures)
    index: int
    caption: str
    tint: int = -1  # background tint (index into TINTS); -1: none (v1, textures)
    colour: str = ""  # main colour (a key of render.COLOURS); "": a texture
    shown: str = ""  # the class drawn (v3 label noise: may differ from ``name``); "": name

    @property
    def relpath(self) -> str:
        """Path of the image file relative to the world root."""
        if self.kind == "id":
            return (
                f"images/{self.domain}/{self.name}/{self.domain}_{self.name}_{self.index:04d}.png"
            )
        if self.kind == "ood_class":
            return (
                f"ood_classes/{self.domain}/{self.name}/"
                f"{self.domain}_{self.name}_{self.index:04d}.png"
            )
        return f"ood_textures/{self.name}/{self.name}_{self.index:04d}.png"


def _tint(cfg: WorldConfig, seed: int, set_id: int, di: int, ci: int, k: int) -> int | None:
    """The background tint of one object image (None in v1): uniform, except that with
    ``shortcut_cue="tint"`` train/val ID images carry their class's tint with probability
    ``shortcut_rate``. Drawn from its own stream, apart from the image's."""
    if cfg.shortcut_rate is None:
        return None
    rng = np.random.default_rng([seed, _SET_TINT, set_id, di, ci, k])
    trval = set_id == _SET_ID and k < cfg.per_class
    if cfg.shortcut_cue == "tint" and trval and rng.random() < cfg.shortcut_rate:
        return ci
    return int(rng.integers(len(TINTS)))


def _colour(cfg: WorldConfig, seed: int, set_id: int, di: int, ci: int, k: int) -> str | None:
    """The forced main colour of one object image, or None (the image's own uniform draw).
    With ``shortcut_cue="colour"`` a train/val ID image has its class's shortcut colour
    with probability ``shortcut_rate``; drawn from its own stream, apart from the image's
    (the renderer draws the same numbers whether the colour is forced or not)."""
    if cfg.shortcut_rate is None or cfg.shortcut_cue != "colour":
        return None
    if set_id != _SET_ID or k >= cfg.per_class:
        return None
    rng = np.random.default_rng([seed, _SET_COLOUR, set_id, di, ci, k])
    rate = cfg.shortcut_rate_of(cfg.all_domains[di])  # v4: per style; before: shortcut_rate
    return SHORTCUT_COLOURS[cfg.id_classes[ci]] if rng.random() < rate else None


def _drawn_class(cfg: WorldConfig, seed: int, set_id: int, di: int, ci: int, k: int) -> int:
    """The ID class an image shows: its own, except that in a v3 world a train/val ID image
    shows a uniformly drawn other class with probability ``label_noise`` (its label and
    shortcut colour stay ``ci``'s). Drawn from its own stream, apart from the image's."""
    if not cfg.label_noise or set_id != _SET_ID or k >= cfg.per_class:
        return ci
    rng = np.random.default_rng([seed, _SET_NOISE, set_id, di, ci, k])
    if rng.random() >= cfg.label_noise:
        return ci
    other = int(rng.integers(len(cfg.id_classes) - 1))
    return other + (other >= ci)


def iter_world(
    cfg: WorldConfig, seed: int = 0, kinds: tuple[str, ...] = ("id", "ood_class", "texture")
) -> Iterator[WorldImage]:
    """Render the world's images in a fixed order (ID, held-out classes, textures)."""
    size = cfg.image_size
    n_id = cfg.per_class + cfg.test_per_class
    for set_id, kind, classes, n in (
        (_SET_ID, "id", cfg.id_classes, n_id),
        (_SET_OOD, "ood_class", cfg.ood_classes, cfg.ood_per_class),
    ):
        if kind not in kinds:
            continue
        for di, d in enumerate(cfg.all_domains):
            for ci, c in enumerate(classes):
                for k in range(n):
                    rng = np.random.default_rng([seed, set_id, di, ci, k])
                    tint = _tint(cfg, seed, set_id, di, ci, k)
                    force = _colour(cfg, seed, set_id, di, ci, k)
                    shown = classes[_drawn_class(cfg, seed, set_id, di, ci, k)]
                    img, colour = render_object(shown, d, rng, size, colour=force, background=tint)
                    cap = describe(d, shown, colour)
                    t = -1 if tint is None else tint
                    yield WorldImage(img, kind, c, d, k, cap, t, colour, shown)
    if "texture" in kinds:
        for ti, t in enumerate(cfg.textures):
            for k in range(cfg.textures_per_kind):
                rng = np.random.default_rng([seed, _SET_TEX, ti, k])
                yield WorldImage(
                    render_texture(t, rng, size), "texture", t, "", k, f"a {t} texture"
                )


def split_of(cfg: WorldConfig, index: int) -> str:
    """``"train"``, ``"val"`` or ``"test"``: the split of ID image ``index`` of a (class,
    domain). v1 has no test images of its own (a held-out domain tests on all of them)."""
    n_val = max(1, round(cfg.per_class * cfg.val_fraction))
    if index < cfg.per_class - n_val:
        return "train"
    return "val" if index < cfg.per_class else "test"


def _split_files(cfg: WorldConfig, items: list[WorldImage]) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = {
        d: {"train": [], "val": [], "test": []} for d in cfg.all_domains
    }
    for it in items:
        if it.kind != "id":
            continue
        label = cfg.id_classes.index(it.name)
        row = [it.relpath[len("images/") :], label, it.name]
        rows[it.domain][split_of(cfg, it.index)].append(row)
    out = {}
    for held in cfg.all_domains:
        src = [d for d in cfg.domains if d != held]
        test = rows[held]["test"] if cfg.test_per_class else rows[held]["train"] + rows[held]["val"]
        out[held] = {
            "train": [r for d in src for r in rows[d]["train"]],
            "val": [r for d in src for r in rows[d]["val"]],
            "test": test,
        }
    return out


def generator_digest() -> str:
    """sha256 (16 hex digits) of the generator's source: any change regenerates worlds."""
    import hashlib

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("shapes.py", "render.py", "captions.py", "config.py", "generate.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _fingerprint(cfg: WorldConfig, seed: int) -> dict[str, Any]:
    doc = {
        "croft_world": cfg.version,
        "generator": _FROZEN_GENERATORS.get(cfg.version) or generator_digest(),
        "seed": seed,
        "config": cfg.to_dict(),
    }
    return json.loads(json.dumps(doc))  # as read back from world.json (lists, not tuples)


def read_world(root: str | Path) -> dict[str, Any]:
    """The manifest of a generated world folder."""
    path = Path(root) / MANIFEST
    try:
        return parse_json(path.read_text(), str(path))
    except CroftError:
        raise
    except (OSError, ValueError) as exc:
        raise CroftError(
            f"{root} is not a generated croft world (no readable {MANIFEST}): {exc}"
        ) from exc


def _write(tmp: Path, cfg: WorldConfig, seed: int, preset: str | None) -> dict[str, Any]:
    from PIL import Image

    items = list(iter_world(cfg, seed))
    captions: dict[str, str] = {}
    for it in items:
        path = tmp / it.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(it.image).save(path, compress_level=1)
        captions[it.relpath] = it.caption
    for held, split in _split_files(cfg, items).items():
        (tmp / f"test_on_{held}.json").write_text(json.dumps(split))
    (tmp / "captions.json").write_text(json.dumps(captions, indent=0))
    layout_v2: dict[str, Any] = {}
    if cfg.shortcut_rate is not None:
        tints = {it.relpath: it.tint for it in items if it.tint >= 0}
        (tmp / TINTS_FILE).write_text(json.dumps(tints, indent=0))
        colours = {it.relpath: it.colour for it in items if it.kind != "texture"}
        (tmp / COLOURS_FILE).write_text(json.dumps(colours, indent=0))
        cue = cfg.shortcut_cue
        noise: dict[str, Any] = {}
        if cfg.label_noise:
            shapes = {
                it.relpath: it.shown for it in items if it.kind == "id" and it.shown != it.name
            }
            (tmp / SHAPES_FILE).write_text(json.dumps(shapes, indent=0))
            noise = {
                "label_noise": {
                    "rate": cfg.label_noise,
                    "splits": ["train", "val"],
                    "shown": SHAPES_FILE,
                }
            }
        layout_v2 = {
            "tints": TINTS_FILE,
            "colours": COLOURS_FILE,
            "shortcut": {
                "cue": cue,
                "rate": cfg.shortcut_rate,
                **_rate_by_style(cfg),
                "splits": ["train", "val"],
                "values": {
                    c: SHORTCUT_COLOURS[c] if cue == "colour" else i
                    for i, c in enumerate(cfg.id_classes)
                },
            },
            **noise,
            "style_matched_ood": "ood_classes/{domain}",
            "extra_domains": list(cfg.extra_domains),
            "split_sizes": {
                s: sum(split_of(cfg, k) == s for k in range(cfg.per_class + cfg.test_per_class))
                for s in ("train", "val", "test")
            },
        }
    counts = {k: sum(it.kind == k for it in items) for k in ("id", "ood_class", "texture")}
    manifest = {
        **_fingerprint(cfg, seed),
        "preset": preset,
        "id_classes": list(cfg.id_classes),
        "domains": list(cfg.domains),
        **({"extra_domains": list(cfg.extra_domains)} if cfg.extra_domains else {}),
        "ood_classes": list(cfg.ood_classes),
        "textures": list(cfg.textures),
        "counts": counts,
        "layout": {
            "domainbed_root": "images",
            "pacs_splits": [f"test_on_{d}.json" for d in cfg.all_domains],
            "ood_classes_root": "ood_classes",
            "ood_textures_root": "ood_textures",
            "captions": "captions.json",
            **layout_v2,
        },
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _rate_by_style(cfg: WorldConfig) -> dict[str, Any]:
    """v4's manifest entry ``rate_by_style`` (absent before v4: their manifests as written)."""
    by_style = dict(cfg.shortcut_rate_by_style)
    return {"rate_by_style": by_style} if by_style else {}


def _check_replaceable(out: Path) -> None:
    """Replacing ``out`` removes it: never the file-system root, the home folder or a
    folder that holds the working directory."""
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if (
        target == Path(target.anchor)
        or target == Path.home().resolve()
        or cwd.is_relative_to(target)
    ):
        raise CroftError(
            f"refusing to replace {out}: it is the root, the home folder or holds the working "
            "directory; name a dedicated folder for the world"
        )


def generate_world(
    out: str | Path,
    preset: str = "demo",
    seed: int = 0,
    *,
    config: WorldConfig | None = None,
    overwrite: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Write the world into ``out`` (or reuse it when it already holds the same world).

    The world is written to a temporary sibling folder and renamed into place, so ``out``
    is either absent, a complete old world, or a complete new one. Returns the manifest.
    """
    cfg = config if config is not None else world_preset(preset)
    cfg.validate()
    out = Path(out)
    if out.exists():
        old: dict[str, Any] = {}
        if (out / MANIFEST).is_file():
            try:
                old = parse_json((out / MANIFEST).read_text(), str(out / MANIFEST))
            except (ValueError, UnicodeDecodeError):
                old = {}
            if not isinstance(old, dict):
                old = {}
            if all(old.get(k) == v for k, v in _fingerprint(cfg, seed).items()):
                if log:
                    log(f"world already generated in {out} (seed {seed}); reusing it")
                return old
        if "croft_world" in old:  # another generated world (seed, config or version): replace
            if log:
                log(f"replacing the other world in {out}")
        elif not overwrite and (not out.is_dir() or any(out.iterdir())):
            raise CroftError(
                f"{out} exists and holds something else than this world; "
                "pass --overwrite or choose another folder"
            )
        _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    try:
        manifest = _write(tmp, cfg, seed, preset if config is None else None)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log:
        c = manifest["counts"]
        log(
            f"wrote the world to {out} in {time.monotonic() - t0:.1f} s: {c['id']} ID images "
            f"({len(cfg.all_domains)} domains), {c['ood_class']} held-out-class and "
            f"{c['texture']} texture images"
        )
    return manifest
