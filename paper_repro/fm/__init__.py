"""Foundation models that draw the server's synthetic set: the embedded class-conditional DDPM and a wrapper for
local Stable Diffusion weights. The only place that imports diffusers (lazily)."""
from .ddpm import ClassConditionalDDPM, DDPMTrainConfig, FMCheckpointError
from .text2image import StableDiffusionFM

__all__ = ["ClassConditionalDDPM", "DDPMTrainConfig", "FMCheckpointError", "StableDiffusionFM"]
