"""The embedded foundation model: a small class-conditional diffusion model (diffusers ``UNet2DModel`` with class
embeddings), DDPM training on the server's public split, DDIM sampling with classifier-free guidance."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageSet, to_uint8
from ..precision import autocast
from ..progress import tqdm
from ..rng import torch_gen

CONFIG_FILE = "fm_config.json"


class FMCheckpointError(FileNotFoundError):
    """An FM checkpoint is missing or unreadable; the message says how to make or fetch one."""


@dataclass(frozen=True)
class DDPMTrainConfig:
    """How the embedded FM is built and trained (saved beside the weights). ours unless noted."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """UNet widths per resolution (1.1 M parameters at 28×28, about 0.7–0.8 s per training step of 64 on 2 cores)."""
    layers_per_block: int = 1
    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 64
    lr: float = 1e-3
    """AdamW peak learning rate (linear warm-up 100 steps, cosine decay)."""
    ema_decay: float = 0.999
    """EMA of the weights; the EMA weights are saved (they draw cleaner samples)."""
    cond_drop: float = 0.1
    """Probability of replacing the label by the null class (classifier-free guidance)."""
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    seed: int = 0
    bf16: bool = False
    """bf16 autocast (measured slower than fp32 for this UNet on our 2-core CPU; useful on GPUs)."""


def ddpm_steps(
    unet,
    sched,
    data: ImageSet,
    config: DDPMTrainConfig,
    opt: torch.optim.Optimizer,
    ema,
    gen: torch.Generator,
    steps: int,
    lr_scheduler=None,
    desc: str = "train FM",
    progress: bool = True,
    log_every: int = 0,
) -> list[float]:
    """``steps`` DDPM ε-prediction steps on ``data`` from the UNet's current weights (batches of
    ``config.batch_size``, label dropout ``config.cond_drop`` to the null class, gradient norm clipped at 1, the EMA
    stepped after each update and copied into the weights at the end). Shared by training from scratch and the
    attacker's fine-tuning. Returns the losses."""
    x_all, y_all = data.tensors()
    losses = []
    unet.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        idx = torch.randint(len(x_all), (config.batch_size,), generator=gen)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(len(y), generator=gen) < config.cond_drop] = data.num_classes  # null class
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(config.num_train_timesteps, (len(x0),), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            pred = unet(xt, t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        ema.step(unet.parameters())
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0 and not progress:
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    ema.copy_to(unet.parameters())
    return losses


def _unet(shape: tuple[int, int, int], num_classes: int, cfg: DDPMTrainConfig):
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    down = tuple(["DownBlock2D"] * (n - 1) + ["AttnDownBlock2D"])
    up = tuple(["AttnUpBlock2D"] + ["UpBlock2D"] * (n - 1))
    return UNet2DModel(
        sample_size=shape[-1],
        in_channels=shape[0],
        out_channels=shape[0],
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=num_classes + 1,
        norm_num_groups=min(32, cfg.block_out_channels[0]),
    )


class ClassConditionalDDPM:
    """Class-conditional DDPM. ``train`` on real images, ``save``/``load`` a folder, ``generate`` a class-balanced
    synthetic :class:`ImageSet`. Label ``num_classes`` is the null class used for guidance."""

    def __init__(self, unet, classes: tuple[str, ...], train_config: DDPMTrainConfig, info: dict | None = None):
        self.unet = unet.eval()
        self.classes = tuple(classes)
        self.train_config = train_config
        self.info = dict(info or {})

    @property
    def shape(self) -> tuple[int, int, int]:
        c = self.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)

    # ------------------------------------------------------------------------------------------------ training
    @classmethod
    def train(
        cls, data: ImageSet, config: DDPMTrainConfig = DDPMTrainConfig(), progress: bool = True, log_every: int = 100
    ) -> "ClassConditionalDDPM":
        """DDPM ε-prediction training on ``data`` (the public split). Returns the EMA model."""
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        gen = torch_gen(config.seed, "fm_train")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            unet = _unet(data.shape, data.num_classes, config)
        sched = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
        ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True)
        opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=1e-4)
        warm = 100
        lr_at = lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / config.steps))  # noqa
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        t0 = time.time()
        losses = ddpm_steps(
            unet,
            sched,
            data,
            config,
            opt,
            ema,
            gen,
            config.steps,
            scheduler,
            desc="train FM",
            progress=progress,
            log_every=log_every,
        )
        info = {
            "train_seconds": round(time.time() - t0, 1),
            "final_loss": float(np.mean(losses[-100:])),
            "train_data_digest": data.digest(),
            "train_size": len(data),
        }
        return cls(unet, data.classes, config, info)

    # ------------------------------------------------------------------------------------------------ save/load
    def save(self, folder: str | Path, command: str = "") -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        meta = {
            "kind": "class_conditional_ddpm",
            "classes": list(self.classes),
            "train_config": asdict(self.train_config),
            "info": self.info,
            "command": command,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ClassConditionalDDPM":
        from diffusers import UNet2DModel

        folder = Path(folder)
        how = (
            "Train one with `python -m paper_repro.fm train --profile quick --out <folder>` (or notebook "
            "01_foundation_model), or point fm.checkpoint at an existing one."
        )
        if not (folder / CONFIG_FILE).exists() or not (folder / "unet").is_dir():
            raise FMCheckpointError(f"No FM checkpoint at {folder} ({CONFIG_FILE} and unet/ expected). {how}")
        try:
            meta = json.loads((folder / CONFIG_FILE).read_text())
            unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, low_cpu_mem_usage=False)
        except Exception as e:
            raise FMCheckpointError(
                f"FM checkpoint at {folder} is unreadable ({type(e).__name__}: {e}). Delete it and re-create it. {how}"
            ) from None
        tc = meta["train_config"]
        tc["block_out_channels"] = tuple(tc["block_out_channels"])
        return cls(unet, tuple(meta["classes"]), DDPMTrainConfig(**tc), meta.get("info"))

    def digest(self) -> str:
        """Hash of the weights: part of every cache key built on this model's samples."""
        h = hashlib.sha256()
        for k, v in sorted(self.unet.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def generate(
        self,
        n_per_class: int,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 2.0,
        batch_size: int = 250,
        progress: bool = True,
        eta: float = 0.0,
        precision: str = "fp32",
        compile: bool = False,
    ) -> ImageSet:
        """Class-balanced synthetic set: ``n_per_class`` images of every class, labels in class order.

        1. labels 0…C−1 each repeated ``n_per_class`` times; 2. per batch, start from N(0, I) drawn with
        ``generator``; 3. DDIM steps with classifier-free guidance ε = ε_∅ + w·(ε_c − ε_∅) (``eta`` = 0
        deterministic DDIM, 1 = DDPM-like ancestral noise); 4. map to uint8. Both guidance branches go through
        the UNet as one batch; ``precision="bf16"`` runs the UNet under bf16 autocast (the scheduler and the
        latents stay fp32). ``compile=True`` runs the UNet through ``torch.compile`` (needs a C++ compiler on CPU;
        the first batch pays ~1 min of compilation, cached on disk afterwards; same images up to float rounding).
        """
        from diffusers import DDIMScheduler

        tc = self.train_config
        sched = DDIMScheduler(
            num_train_timesteps=tc.num_train_timesteps, beta_schedule=tc.beta_schedule, clip_sample=True
        )
        sched.set_timesteps(num_inference_steps)
        gen = generator if generator is not None else torch_gen(0, "fm_generate")
        n_cls = len(self.classes)
        labels = torch.arange(n_cls).repeat_interleave(n_per_class)
        out = []
        batches = list(torch.split(labels, batch_size))
        unet = torch.compile(self.unet, dynamic=False) if compile else self.unet
        dev = next(self.unet.parameters()).device  # noise drawn on the CPU generator, so any device draws alike
        bar = tqdm(total=len(labels), desc="sample FM", unit="img", disable=not progress)
        for y in batches:
            x = torch.randn((len(y), *self.shape), generator=gen).to(dev)
            y = y.to(dev)
            null = torch.full_like(y, n_cls)
            for t in sched.timesteps:
                with autocast(x.device.type, precision):
                    if guidance_scale == 1.0:
                        eps = unet(x, t, class_labels=y).sample.float()
                    else:
                        e = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample.float()
                        e_c, e_u = e.chunk(2)
                        eps = e_u + guidance_scale * (e_c - e_u)
                x = sched.step(eps, t, x, eta=eta, generator=gen).prev_sample
            out.append(to_uint8(x.cpu()))
            bar.update(len(y))
        bar.close()
        return ImageSet(np.concatenate(out), labels.numpy(), self.classes)
