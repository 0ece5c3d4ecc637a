"""A text-to-image foundation model: local Stable Diffusion weights prompted with class names, same interface as
:class:`~paper_repro.fm.ddpm.ClassConditionalDDPM`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageSet, to_uint8
from ..progress import tqdm
from ..rng import torch_gen
from .ddpm import FMCheckpointError

HUB_ID_EXAMPLE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
"""A hub id that holds a diffusers-format Stable Diffusion checkpoint (named only in error messages; never fetched)."""
LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luminance weights (as PIL ``convert("L")`` and torchvision ``rgb_to_grayscale``)."""


class StableDiffusionFM:
    """Class-prompted Stable Diffusion: one prompt per class, ``prompt_template.format(class name)``.

    The paper's introduction names Stable Diffusion as the kind of foundation model the server queries
    [C: 2401.10375]; its predecessors drew the synthetic set from a text-to-image model (DALL-E) with class prompts
    such as "an airplane" [C: 2311.00144]. Outputs (512×512 RGB for SD 1.x) are resized with antialiasing to
    ``resolution`` and, for ``channels == 1``, converted to luminance, so the synthetic set matches the FL dataset.
    Weights are read from a local diffusers folder only; nothing is downloaded.
    """

    def __init__(
        self,
        pipe,
        classes: tuple[str, ...],
        prompt_template: str = "a photo of a {}",
        resolution: int = 32,
        channels: int = 3,
        info: dict | None = None,
    ):
        if "{}" not in prompt_template:
            raise ValueError(f"prompt_template {prompt_template!r} needs a '{{}}' where the class name goes")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)  # our bar counts images instead
        self.classes = tuple(classes)
        self.prompt_template = prompt_template
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.info = dict(info or {})
        self._digest: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def prompts(self) -> list[str]:
        """The prompt of every class, in class order."""
        return [self.prompt_template.format(c) for c in self.classes]

    def to(self, device: str | torch.device) -> StableDiffusionFM:
        """Move the pipeline (e.g. to ``"cuda"``); returns ``self``."""
        self.pipe.to(device)
        return self

    # ------------------------------------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        folder: str | Path,
        classes: tuple[str, ...],
        prompt_template: str = "a photo of a {}",
        resolution: int = 32,
        channels: int = 3,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> StableDiffusionFM:
        """Load a diffusers-format Stable Diffusion folder (``model_index.json``, ``unet/``, ``vae/``, ...) from disk.

        ``device``/``dtype`` are optional (e.g. ``"cuda"``, ``torch.float16``); by default the pipeline stays on the
        CPU in float32. The safety checker is not loaded (class prompts; it would also blank some images).
        """
        from diffusers import StableDiffusionPipeline

        folder = Path(folder)
        how = (
            f"Download a Stable Diffusion checkpoint on a machine with internet, e.g. `from diffusers import "
            f"StableDiffusionPipeline; StableDiffusionPipeline.from_pretrained('{HUB_ID_EXAMPLE}')"
            f".save_pretrained('<folder>')`, copy <folder> here and set fm.checkpoint=<folder> "
            f"(or use fm.source=ddpm, the embedded model)."
        )
        if not (folder / "model_index.json").is_file():
            raise FMCheckpointError(
                f"No Stable Diffusion checkpoint at {folder} (a diffusers folder with model_index.json expected). {how}"
            )
        kwargs = {"dtype": dtype} if dtype is not None else {}
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                str(folder), local_files_only=True, safety_checker=None, requires_safety_checker=False, **kwargs
            )
        except Exception as e:  # noqa: BLE001 - any failure means: re-fetch the checkpoint
            raise FMCheckpointError(
                f"Stable Diffusion checkpoint at {folder} is unreadable ({type(e).__name__}: {e}). {how}"
            ) from None
        if device is not None:
            pipe.to(device)
        info = {"kind": "stable_diffusion", "folder": str(folder), "prompt_template": prompt_template}
        return cls(pipe, classes, prompt_template, resolution, channels, info)

    def digest(self) -> str:
        """Hash of the weights (UNet, VAE, text encoder), the scheduler config and the prompt/resolution/channels
        settings: part of every cache key built on this model's samples."""
        if self._digest is None:
            h = hashlib.sha256()
            for name in ("unet", "vae", "text_encoder"):
                for k, v in sorted(getattr(self.pipe, name).state_dict().items()):
                    h.update(f"{name}.{k}".encode())
                    h.update(v.detach().float().cpu().numpy().tobytes())
            h.update(repr(sorted(dict(self.pipe.scheduler.config).items())).encode())
            h.update(f"{self.prompt_template}|{self.resolution}|{self.channels}".encode())
            self._digest = h.hexdigest()[:16]
        return self._digest

    # ------------------------------------------------------------------------------------------------ sampling
    def _postprocess(self, images: torch.Tensor) -> np.ndarray:
        """Pipeline output in [0, 1], (B, 3, h, w) → uint8 (B, channels, resolution, resolution)."""
        x = images.float() * 2 - 1
        if self.channels == 1:
            x = (x * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False, antialias=True
            )
        return to_uint8(x)

    @torch.inference_mode()
    def generate(
        self,
        n_per_class: int,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        batch_size: int = 16,
        progress: bool = True,
    ) -> ImageSet:
        """Class-balanced synthetic set: ``n_per_class`` images of every class, labels in class order.

        Per class, the pipeline is called with that class's prompt in batches of at most ``batch_size`` images, all
        latents drawn from the one ``generator`` (a CPU generator works on any device); default guidance 7.5 is
        Stable Diffusion's. Outputs are resized/converted to :attr:`shape` and mapped to uint8.
        """
        gen = generator if generator is not None else torch_gen(0, "fm_generate")
        out = []
        bar = tqdm(total=n_per_class * len(self.classes), desc="sample SD", unit="img", disable=not progress)
        for prompt in self.prompts():
            left = n_per_class
            while left > 0:
                k = min(batch_size, left)
                images = self.pipe(
                    prompt=prompt,
                    num_images_per_prompt=k,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    generator=gen,
                    output_type="pt",
                ).images
                out.append(self._postprocess(images))
                left -= k
                bar.update(k)
        bar.close()
        labels = np.arange(len(self.classes)).repeat(n_per_class)
        x = np.concatenate(out) if out else np.zeros((0, *self.shape), np.uint8)
        return ImageSet(x, labels, self.classes)
