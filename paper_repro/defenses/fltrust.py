"""``fltrust`` — FLTrust (Cao, Fang, Liu & Gong, NDSS 2021), a step-3 defense with a server-side root of trust: each
round the server trains its own update g₀ from the global model on a small root set, gives client k the trust score
TS_k = ReLU(cos(g_k, g₀)), rescales every update to ‖g₀‖ and applies Σ TS_k · ĝ_k / Σ TS_k. A client whose update
points away from the server's (TS = 0) is reported as flagged.

Faithful [C: Cao et al. §4, Algorithm 1]: ReLU-clipped cosine trust, magnitude normalisation to the root update,
trust-weighted mean, root update trained with the clients' local settings for as many iterations as a client of the
round takes (Algorithm 1 runs R_l local iterations on both sides: here epochs × ⌈n̄/B⌉, n̄ the round's mean client
size, so the root's 100 examples are passed over repeatedly); a root set of 100 examples (the paper's default).
Adapted [R]: the root set is drawn, each round, from the server's synthetic set, the only data the server
holds here, so under the FM attack the root of trust is itself poisoned (the threat this package studies); when no
client earns trust the round's update is zero (the global model stays)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models import flat_state
from ..params import Field, params
from ..training import local_train
from .base import AggregateResult, Defense, RoundContext, without_nonfinite


def fltrust_combine(updates: torch.Tensor, root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """updates (K, P), root update (P,) → (aggregate (P,), trust scores (K,)): Σ TS_k ‖g₀‖ g_k / ‖g_k‖ / Σ TS_k."""
    trust = F.relu(F.cosine_similarity(updates, root[None], dim=1))
    if trust.sum() == 0:
        return torch.zeros_like(root), trust
    scaled = updates * (root.norm() / updates.norm(dim=1).clamp_min(1e-12))[:, None]
    return (trust[:, None] * scaled).sum(0) / trust.sum(), trust


def root_schedule(pick: np.ndarray, n: int) -> np.ndarray:
    """The root set's indices ``pick`` repeated (in order) to ``n`` examples, at least once each: one epoch over it
    takes as many steps as a client of ``n`` examples does."""
    reps = -(-max(n, len(pick)) // len(pick))
    return np.tile(pick, reps)[: max(n, len(pick))]


class FLTrust(Defense):
    """Trust-weighted mean of norm-matched updates, trust from the cosine with the server's root update."""

    name = "fltrust"

    @params
    class Params:
        root_size: int = Field(100, ge=1, description="root set: examples drawn from the synthetic set each round")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        if cfg.fl.weighting != "samples":
            raise ValueError(
                "fltrust trains its root update for as many iterations as a client of the round, read from the "
                f"round's sample counts; fl.weighting={cfg.fl.weighting!r} hides them: use fl.weighting='samples'"
            )

    @without_nonfinite
    def aggregate(self, updates, weights, ctx: RoundContext) -> AggregateResult:
        if ctx.local is None:
            raise ValueError("fltrust needs the clients' local-training settings in the round context (ctx.local)")
        syn = ctx.synthetic
        pick = torch.randperm(len(syn), generator=ctx.generator)[: self.root_size].numpy()
        # weights are the round's client sizes (fl.weighting="samples", checked with the config)
        x, y = syn.subset(root_schedule(pick, round(float(weights.mean())))).tensors(ctx.device)
        g = flat_state(ctx.global_model)
        local = ctx.local
        theta = local_train(
            ctx.global_model,
            x,
            y,
            local.epochs,
            local.lr,
            local.momentum,
            local.batch_size,
            ctx.generator,
            ctx.channels_last,
            precision=local.precision,
        )
        update, trust = fltrust_combine(updates, (theta - g).to(updates.dtype))
        flagged = [int(k) for k, t in zip(ctx.client_ids, trust) if t <= 0]
        return AggregateResult(update, flagged, {"mean_trust": float(trust.mean())})
