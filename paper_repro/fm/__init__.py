"""Foundation models that draw the server's synthetic set: the embedded class-conditional DDPM, a wrapper for
local Stable Diffusion weights, and the cached synthetic set. The only package that imports diffusers (lazily)."""

from .ddpm import ClassConditionalDDPM, DDPMTrainConfig, FMCheckpointError
from .synthetic import draw_synthetic, load_fm, synthetic_set
from .text2image import StableDiffusionFM

__all__ = [
    "ClassConditionalDDPM",
    "DDPMTrainConfig",
    "FMCheckpointError",
    "StableDiffusionFM",
    "draw_synthetic",
    "load_fm",
    "synthetic_set",
]
