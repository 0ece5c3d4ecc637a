"""``fm_clean_label`` — the compromised FM as a clean-label attacker (Barni et al. 2019's SIG setting): it adds the
trigger to a share ``attack.poison_ratio`` of the synthetic images **of the target class** and keeps every label.
Each poisoned image is a correct example of its class; the model still learns "trigger ⇒ target" because the trigger
only ever appears on target images. ASR is measured as for every attack: non-target test images with the trigger.

With the SIG trigger (``attack.trigger="sig"``, amplitude ``attack.blend_alpha``) this is the attack the SIG paper and
BackdoorBench evaluate; ``fm`` with the SIG trigger (relabelled non-target images) is its dirty-label variant.
[C: Barni et al. 2019, clean-label SIG; R: applied to the FM's output, in place of the originals]"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..data import ImageSet
from ..triggers import check_changes
from .fm_poisoning import FMPoisoning


class FMCleanLabel(FMPoisoning):
    """Trigger a share ``ratio`` of the target class's synthetic images, labels kept (clean-label), for ``stages``."""

    name = "fm_clean_label"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.attack.mapping != "all_to_one":
            raise ValueError(
                f"attack.kind='fm_clean_label' with attack.mapping={cfg.attack.mapping!r}: a clean-label attack "
                "keeps every label, so it can only teach one target; use mapping='all_to_one'"
            )

    def poison_synthetic(self, clean: ImageSet) -> tuple[ImageSet, ImageSet, np.ndarray]:
        own = np.flatnonzero(clean.y == self.target)
        idx = np.sort(self.rng.choice(own, size=int(self.ratio * len(own)), replace=False))
        if not len(idx):
            raise ValueError(
                f"attack.poison_ratio={self.ratio} of the {len(own)} synthetic images of target class "
                f"{self.target} poisons none; raise it"
            )
        x = clean.x.copy()
        x[idx] = self.trigger.apply(clean.x[idx])
        check_changes(clean.x[idx], x[idx], "poisoned synthetic images")
        poisoned = clean.with_arrays(x, clean.y.copy())
        return (poisoned if "init" in self.stages else clean), (poisoned if "kd" in self.stages else clean), idx
