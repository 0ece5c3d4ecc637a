"""The server's synthetic set: the configured FM loaded (and checked against the public split it must have been
trained on), a class-balanced draw, and its disk cache keyed by everything that made the draw."""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from ..codehash import code_digest_of, library_versions
from ..config import Config, ConfigError, image_shape
from ..data import ImageSet
from ..splits import load_run_dataset
from ..store import REPO_ROOT, cache_dir, resolve_path, save_atomic, stable_hash
from .draw import draw_synthetic

SHIPPED = REPO_ROOT / "data" / "synthetic"
"""Synthetic sets committed with the package (each with the key that made it): a fresh clone is served these
instead of drawing them, as long as its key is the same."""


def sampler_code(source: str) -> str:
    """Digest of the code that draws from an FM of ``source``: the import closure of :func:`draw_synthetic` and of
    the FM's class (loading, sampling, the DDIM/DDPM scheduler calls)."""
    from .ddpm import ClassConditionalDDPM
    from .text2image import StableDiffusionFM

    fm = {"ddpm": ClassConditionalDDPM, "stable_diffusion": StableDiffusionFM}.get(source)
    return code_digest_of(draw_synthetic, *([fm] if fm else []))


def checkpoint_digest(folder: Path) -> str:
    """Hash of every file of an FM checkpoint folder (names and bytes): the FM's part of a cache key, computed
    without loading the model (read once per process while no file changes size or time)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return _checkpoint_digest(str(folder), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _checkpoint_digest(folder: str, files: tuple) -> str:
    h = hashlib.sha256()
    for f, _, _ in files:
        h.update(str(Path(f).relative_to(folder)).encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def checkpoint_meta(path: Path) -> dict:
    """The metadata of the DDPM checkpoint at ``path`` (``fm_config.json``, ``unet/config.json``), checked field by
    field before any weight is read; FMCheckpointError names the file, the field and the fix."""
    from .ddpm import CONFIG_FILE, DDPMTrainConfig, FMCheckpointError

    fix = (
        "Re-create it with `python -m paper_repro.fm train --profile <profile> --out <folder>`, or point "
        "fm.checkpoint at an intact one."
    )
    meta = {}
    for name in (CONFIG_FILE, "unet/config.json"):
        f = path / name
        try:
            meta[name] = json.loads(f.read_text())
        except FileNotFoundError:
            raise FMCheckpointError(f"No FM checkpoint at {path}: {f} is missing. {fix}") from None
        except (OSError, ValueError) as e:
            raise FMCheckpointError(f"{f} cannot be read ({type(e).__name__}: {e}). {fix}") from None
        if not isinstance(meta[name], dict):
            raise FMCheckpointError(f"{f} holds {type(meta[name]).__name__}, not the expected mapping. {fix}")
    top, unet = meta[CONFIG_FILE], meta["unet/config.json"]
    f = path / CONFIG_FILE
    problems = []
    if top.get("kind") != "class_conditional_ddpm":
        problems.append(f"kind={top.get('kind')!r} (expected 'class_conditional_ddpm')")
    classes = top.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        problems.append(f"classes={classes!r} (expected a list of class names)")
    info = top.get("info")
    if not (isinstance(info, dict) and isinstance(info.get("train_data_digest"), str)):
        problems.append("info.train_data_digest is missing (the digest of the public split it was trained on)")
    tc = top.get("train_config")
    try:
        DDPMTrainConfig(**{**tc, "block_out_channels": tuple(tc["block_out_channels"])})
    except (TypeError, KeyError, ValueError) as e:
        problems.append(f"train_config is not a DDPM training config ({type(e).__name__}: {e})")
    for key in ("sample_size", "in_channels", "num_class_embeds"):
        if not isinstance(unet.get(key), int):
            problems.append(f"unet/config.json {key}={unet.get(key)!r} (expected an integer)")
    if problems:
        raise FMCheckpointError(f"{f} is damaged: {'; '.join(problems)}. {fix}")
    return {
        "classes": classes,
        "info": info,
        "sample_size": unet["sample_size"],
        "in_channels": unet["in_channels"],
        "num_class_embeds": unet["num_class_embeds"],
    }


def check_checkpoint(path: Path, public: ImageSet) -> None:
    """Refuse a DDPM checkpoint that does not fit this config's data: damaged metadata, other classes, another image
    shape, or another public split (its samples could leak client data)."""
    from .ddpm import FMCheckpointError

    meta = checkpoint_meta(path)
    if tuple(meta["classes"]) != tuple(public.classes) or meta["num_class_embeds"] != len(public.classes) + 1:
        raise FMCheckpointError(
            f"The FM at {path} draws {len(meta['classes'])} classes {meta['classes']} (class embeddings "
            f"{meta['num_class_embeds']}), the dataset has {len(public.classes)}: {list(public.classes)}. Train an FM "
            "on this dataset with `python -m paper_repro.fm train`."
        )
    c, h, w = public.shape
    if (meta["in_channels"], meta["sample_size"]) != (c, h):
        raise FMCheckpointError(
            f"The FM at {path} draws {meta['in_channels']}×{meta['sample_size']}×{meta['sample_size']} images, the "
            f"dataset's are {c}×{h}×{w}. Train an FM on this dataset with `python -m paper_repro.fm train`."
        )
    trained_on = meta["info"]["train_data_digest"]
    if trained_on != public.digest():
        raise FMCheckpointError(
            f"The FM at {path} was trained on a different public split (digest {trained_on}, this config's is "
            f"{public.digest()}): its samples could leak client data. Keep data.public_size/split_seed as when "
            "it was trained, or train a new FM with `python -m paper_repro.fm train`."
        )


def load_fm(cfg: Config, public: ImageSet | None = None, device: str = "cpu"):
    """The configured foundation model on ``device`` (a DDPM must have been trained on this config's public
    split)."""
    from .ddpm import ClassConditionalDDPM
    from .text2image import StableDiffusionFM

    path = resolve_path(cfg.fm.checkpoint)
    if cfg.fm.source == "ddpm":
        if public is not None:
            check_checkpoint(path, public)
        fm = ClassConditionalDDPM.load(path)
        fm.unet.to(device)  # the noise is drawn on the CPU generator either way: any device draws alike
        return fm
    if cfg.fm.source == "stable_diffusion":
        c, h, _ = image_shape(cfg.data.dataset)
        classes = public.classes if public is not None else load_run_dataset(cfg.data.dataset)[1].classes
        return StableDiffusionFM.load(path, classes, cfg.fm.prompt_template, resolution=h, channels=c)
    raise ConfigError(f"fm.source={cfg.fm.source!r} has no model to load")


def synthetic_key(cfg: Config, checkpoint: Path) -> dict:
    """Everything that determines the draw: the checkpoint's bytes, every sampler setting, the sampler's code and
    the versions of the libraries it runs on."""
    f = cfg.fm
    return {
        "source": f.source,
        "fm": checkpoint_digest(checkpoint),
        "n": f.n_per_class,
        "steps": f.num_inference_steps,
        "guidance": f.guidance_scale,
        "eta": f.eta,
        "seed": f.sample_seed,
        "batch_size": f.batch_size,
        "prompt": f.prompt_template,
        "precision": f.precision,
        "code": sampler_code(f.source),
        "libraries": library_versions(("torch", "diffusers")),
    }


def synthetic_key_hash(cfg: Config) -> str | None:
    """The hash of :func:`synthetic_key` for ``cfg`` (None for a set taken from the public split itself): what a run
    record keeps so that a check can tell a run whose synthetic set would be drawn differently now."""
    if cfg.fm.source == "real_public":
        return None
    return stable_hash(synthetic_key(cfg, resolve_path(cfg.fm.checkpoint)))


def synthetic_set(
    cfg: Config,
    public: ImageSet,
    progress: bool = True,
    device: str = "cpu",
    compile: bool = False,
    refresh: bool = False,
) -> tuple[ImageSet, str]:
    """The clean class-balanced synthetic set and its digest, cached on disk by a hash of what produced it
    (``refresh``: draw again and replace the cached draw)."""
    f = cfg.fm
    if f.source == "real_public":  # ablation/smoke: the first n_per_class public images of every class
        idx = np.concatenate([np.flatnonzero(public.y == c)[: f.n_per_class] for c in range(public.num_classes)])
        s = public.subset(np.sort(idx))
        return s, s.digest()
    path = resolve_path(f.checkpoint)
    if f.source == "ddpm":
        check_checkpoint(path, public)
    elif not path.is_dir():
        load_fm(cfg, public)  # raises the missing-checkpoint error with its fix
    key_src = synthetic_key(cfg, path)
    name = f"{f.source}_{stable_hash(key_src)}.npz"
    cache = cache_dir() / "synthetic" / name
    for stored in () if refresh else (cache, SHIPPED / name):  # this machine's draw, then the shipped one
        if stored.exists():
            try:
                s = read_synthetic(stored, key_src)
                return s, s.digest()
            except Exception as e:  # truncated or foreign file: say so, then draw again (the key says what to draw)
                which = "cached" if stored == cache else "shipped"
                warnings.warn(
                    f"{which} synthetic set {stored} is unreadable ({type(e).__name__}: {e}); drawing it again",
                    stacklevel=2,
                )
    s = draw_synthetic(load_fm(cfg, public, device), cfg, progress, compile)
    save_atomic(
        lambda tmp: np.savez_compressed(
            tmp, x=s.x, y=s.y, classes=np.array(s.classes), key=json.dumps(key_src), digest=s.digest()
        ),
        cache,
    )
    return s, s.digest()


def read_synthetic(path: Path, key_src: dict) -> ImageSet:
    """A stored draw, refused unless it was drawn for ``key_src`` and its images still hash to the digest written
    with them."""
    with np.load(path) as z:
        if json.loads(str(z["key"])) != json.loads(json.dumps(key_src)):
            raise ValueError("it was drawn for another key (a file copied over it?)")
        s = ImageSet(z["x"], z["y"], tuple(str(c) for c in z["classes"]))
        if "digest" in z and str(z["digest"]) != s.digest():
            raise ValueError("its images differ from the digest written with them")
    return s


def ship_synthetic(cfg: Config, public: ImageSet, progress: bool = True) -> Path:
    """Copy the draw of ``cfg`` (drawn here if this machine has none) into :data:`SHIPPED`, the folder committed with
    the package, replacing any earlier draw of the same FM source and size; returns the shipped file."""
    s, _ = synthetic_set(cfg, public, progress)
    key_src = synthetic_key(cfg, resolve_path(cfg.fm.checkpoint))
    out = SHIPPED / f"{cfg.fm.source}_{stable_hash(key_src)}.npz"
    for old in SHIPPED.glob(f"{cfg.fm.source}_*.npz"):
        with np.load(old) as z:
            k = json.loads(str(z["key"]))
        if old != out and k.get("n") == key_src["n"] and k.get("fm") == key_src["fm"]:
            old.unlink()  # superseded: drawn by older code for the same FM and size
    save_atomic(
        lambda tmp: np.savez_compressed(
            tmp, x=s.x, y=s.y, classes=np.array(s.classes), key=json.dumps(key_src), digest=s.digest()
        ),
        out,
    )
    return out
