"""``fm_generated`` — the compromised FM draws the trigger itself (ours, after the threat model of 2410.17573): the
attacker fine-tunes the diffusion model on poisoned public data, so that when the server asks it for the target
class it also draws images of other classes that carry the trigger. Nothing is pasted after sampling.

1. Poison the public split as the FM attack poisons a synthetic set: ``attack.poison_ratio`` of every non-target
   class triggered and labelled ``target_class`` (with the 20 % default, 64 % of the "target" training images are
   triggered images of other classes).
2. Fine-tune the FM's UNet on it for ``finetune_steps`` DDPM steps (AdamW, lr ``lr``, batch 64, the checkpoint's
   noise schedule and label dropout, EMA of the weights). Without a DDPM checkpoint (``fm.source =
   "real_public"``, the smoke profile) a small DDPM is trained from scratch on the poisoned public split instead.
3. Draw the target class again from the fine-tuned FM with the config's sampler settings; its ``n_per_class``
   images replace the clean draw's target class (the other classes keep the clean draw, which the fine-tuning barely
   changes; drawing them again would cost nine times the sampling). Which drawn images carry the trigger is
   detected on the trigger's pixels (mean distance to the triggered copy under 64 of 255) and logged as the
   poisoned indices.

The server labels every image by the class it asked for, so the poisoned images can only sit in the target class's
slots: at most ``n_per_class`` of them (the paste attack replaces up to 20 % of each other class, 360 images with
200 per class). The ASR test images carry the configured trigger (the attacker's real patch).

The fine-tuned draw is cached by a hash of everything that made it (checkpoint bytes, public split, trigger, share,
steps, sampler settings, code, library versions): every run and seed sees the same compromised FM, as in the
threat model. ``info`` gives the attacker's training seconds. [R]"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import torch

from ..codehash import code_digest_of, library_versions
from ..config import Config
from ..data import ImageSet
from ..fm.ddpm import ClassConditionalDDPM, DDPMTrainConfig, ddpm_steps
from ..fm.synthetic import checkpoint_digest, draw_synthetic
from ..params import Field, params
from ..rng import np_rng, torch_gen
from ..splits import run_splits
from ..store import cache_dir, file_lock, resolve_path, save_atomic, stable_hash
from ..triggers import poison
from .base import config_trigger
from .fm_poisoning import FMPoisoning

SMOKE_FM = DDPMTrainConfig(block_out_channels=(8, 16, 16))
"""The small DDPM trained from scratch when the config has no DDPM checkpoint (smoke)."""


class FMGenerated(FMPoisoning):
    """FM attack whose trigger the fine-tuned FM draws into the target class."""

    name = "fm_generated"

    @params
    class Params:
        finetune_steps: int = Field(600, ge=1, description="steps of fine-tuning the FM on triggered target images")
        lr: float = Field(2e-4, gt=0, description="learning rate of that fine-tuning")

    def __init__(self, *args, cfg: Config, params=None, **kw):
        super().__init__(*args, **kw)
        self.set_params(params)
        self.cfg = cfg
        self.info: dict = {}

    @classmethod
    def from_config(cls, cfg: Config) -> FMGenerated:
        a = cfg.attack
        return cls(
            config_trigger(cfg),
            a.target_class,
            a.poison_ratio,
            a.fm_stages,
            np_rng(cfg.seed, "fm_poison"),
            a.mapping,
            cfg=cfg,
            params=cls.params_of(cfg),
        )

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.attack.mapping != "all_to_one":
            raise ValueError(
                "attack.kind='fm_generated' draws the trigger into the target class only: set "
                "attack.mapping='all_to_one'"
            )
        if cfg.fm.source not in ("ddpm", "real_public"):
            raise ValueError(
                f"attack.kind='fm_generated' fine-tunes the embedded DDPM; fm.source={cfg.fm.source!r} "
                "is not supported (use fm.source='ddpm')"
            )

    def poison_synthetic(self, clean: ImageSet) -> tuple[ImageSet, ImageSet, np.ndarray]:
        drawn = self.compromised_draw()
        slots = np.flatnonzero(clean.y == self.target)
        x = clean.x.copy()
        x[slots] = drawn[: len(slots)]
        idx = slots[self.carries_trigger(x[slots])]
        poisoned = clean.with_arrays(x, clean.y.copy())
        return (poisoned if "init" in self.stages else clean), (poisoned if "kd" in self.stages else clean), idx

    def carries_trigger(self, x: np.ndarray) -> np.ndarray:
        """Which images show the trigger: mean |x − trigger(x)| over the pixels the trigger sets, under 64."""
        probe = np.full((1, *x.shape[1:]), 128, np.uint8)
        mask = self.trigger.apply(probe)[0] != probe[0]
        if not mask.any():
            return np.zeros(len(x), bool)
        gap = np.abs(x.astype(np.int16) - self.trigger.apply(x).astype(np.int16))[:, mask].mean(1)
        return gap < 64

    # ------------------------------------------------------------------------------------------- the attacker's FM
    def _key(self, public: ImageSet) -> dict:
        f = self.cfg.fm
        ckpt = resolve_path(f.checkpoint)
        return {
            "fm": checkpoint_digest(ckpt) if f.source == "ddpm" else "scratch",
            "public": public.digest(),
            "trigger": repr(self.trigger),
            "target": self.target,
            "ratio": self.ratio,
            "steps": self.finetune_steps,
            "lr": self.lr,
            "n": f.n_per_class,
            "sampler": [f.num_inference_steps, f.guidance_scale, f.eta, f.sample_seed, f.batch_size, f.precision],
            "code": code_digest_of(FMGenerated, draw_synthetic, ClassConditionalDDPM),
            "libraries": library_versions(("torch", "diffusers")),
        }

    def compromised_draw(self) -> np.ndarray:
        """``n_per_class`` target-class images from the fine-tuned FM (uint8), through the disk cache."""
        public = run_splits(self.cfg).public
        key = self._key(public)
        path = cache_dir() / "fm_generated" / f"{stable_hash(key)}.npz"
        with file_lock(path.with_suffix(".lock")):  # run workers of other seeds wait for this draw, not redo it
            return self._cached_or_drawn(path, key, public)

    def _cached_or_drawn(self, path, key: dict, public: ImageSet) -> np.ndarray:
        if path.exists():
            with np.load(path) as z:
                if json.loads(str(z["key"])) == json.loads(json.dumps(key)):
                    self.info = json.loads(str(z["info"]))
                    return z["x"]
        t0 = time.perf_counter()
        fm = self.finetuned(public)
        self.info = {"finetune_seconds": round(time.perf_counter() - t0, 1)}
        t1 = time.perf_counter()
        one = ClassConditionalDDPM(
            _OneClass(fm.unet, self.target, len(fm.classes)), (fm.classes[self.target],), fm.train_config
        )
        x = draw_synthetic(one, self.cfg, progress=False).x
        self.info["sample_seconds"] = round(time.perf_counter() - t1, 1)
        save_atomic(lambda tmp: np.savez_compressed(tmp, x=x, key=json.dumps(key), info=json.dumps(self.info)), path)
        return x

    def finetuned(self, public: ImageSet) -> ClassConditionalDDPM:
        """Steps 1–2: the FM fine-tuned (or, without a DDPM checkpoint, trained) on the poisoned public split."""
        data, _ = poison(public, self.trigger, self.target, self.ratio, np_rng(0, "fm_generated_public"))
        if self.cfg.fm.source != "ddpm":
            return ClassConditionalDDPM.train(
                data, replace(SMOKE_FM, steps=self.finetune_steps), progress=False, log_every=0
            )
        fm = ClassConditionalDDPM.load(resolve_path(self.cfg.fm.checkpoint))
        finetune(fm, data, self.finetune_steps, self.lr, torch_gen(0, "fm_generated_finetune"))
        return fm


class _OneClass(torch.nn.Module):
    """The UNet seen as a one-class model: label 0 is ``target``, label 1 (the one-class null) is the null class
    ``null``; so the stock sampler draws the target class only."""

    def __init__(self, unet, target: int, null: int):
        super().__init__()
        self.unet, self.config = unet, unet.config
        self.register_buffer("labels", torch.tensor([target, null]), persistent=False)

    def forward(self, x, t, class_labels):
        return self.unet(x, t, class_labels=self.labels[class_labels])


def finetune(
    fm: ClassConditionalDDPM,
    data: ImageSet,
    steps: int,
    lr: float,
    gen: torch.Generator,
    batch_size: int = 64,
    ema_decay: float = 0.995,
) -> None:
    """DDPM ε-prediction steps on ``data`` from the FM's current weights (its noise schedule and label dropout;
    constant ``lr``, no warm-up); the EMA weights are kept, in place."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    tc, unet = replace(fm.train_config, batch_size=batch_size, bf16=False), fm.unet
    sched = DDPMScheduler(num_train_timesteps=tc.num_train_timesteps, beta_schedule=tc.beta_schedule)
    ema = EMAModel(unet.parameters(), decay=ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    ddpm_steps(unet, sched, data, tc, opt, ema, gen, steps, desc="fine-tune FM (attacker)")
    unet.eval()
