"""One class-balanced draw from a foundation model with a config's sampler settings: the code whose closure keys a
cached synthetic set (kept apart from loading and caching so that the key covers the sampler, not the config's
validation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..rng import torch_gen

if TYPE_CHECKING:
    from ..config import Config
    from ..data import ImageSet


def draw_synthetic(fm, cfg: Config, progress: bool = True, compile: bool = False) -> ImageSet:
    """``cfg.fm.n_per_class`` images per class from ``fm`` with the config's sampler settings and sample seed (no
    cache: :func:`synthetic_set` caches the draw of the configured checkpoint)."""
    f = cfg.fm
    kw = {"eta": f.eta, "precision": f.precision, "compile": compile} if f.source == "ddpm" else {}
    return fm.generate(
        f.n_per_class,
        generator=torch_gen(f.sample_seed, "fm_sample"),
        num_inference_steps=f.num_inference_steps,
        guidance_scale=f.guidance_scale,
        batch_size=f.batch_size,
        progress=progress,
        **kw,
    )
