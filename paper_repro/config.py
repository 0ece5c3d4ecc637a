"""The science config: frozen dataclasses of everything that changes a run's numbers, each value validated on
construction. Presets: :mod:`paper_repro.profiles`; execution settings: :mod:`paper_repro.options`; run keys:
:mod:`paper_repro.results`. Every field's docstring names its source: ``[C: ...]`` confirmed in a paper or its code,
``[R]`` reconstructed by us, ``ours`` a package choice (mostly to fit 2 CPU cores); see docs/paper.md."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .checks import FLOAT32_MAX, ConfigError, _check, _check_types, _choice, _fraction, _positive, plain  # noqa: F401

PROFILES = ("smoke", "quick", "paper")
DATASETS = ("fashion_mnist", "fashion_mnist_textured", "cifar10", "synthetic_blobs")
PARTITIONS = ("iid", "dirichlet", "shards")
MODELS = ("tiny", "cnn", "resnet18")
TRIGGERS = ("badnets", "blend", "random_patch", "sig", "dba")
TRIGGER_POSITIONS = ("corner", "centre", "garment")
TEST_HALVES = ("all", "even", "odd")
PLAIN_FM = "data/fm/fashion_mnist_ddpm"
"""The embedded FM's folder: a DDPM trained on plain Fashion-MNIST's public split."""
FM_STAGES, MAPPINGS = ("init", "kd"), ("all_to_one", "all_to_all")
SCHEDULES = ("sampled", "fixed")
FM_SOURCES, WEIGHTINGS = ("ddpm", "stable_diffusion", "real_public"), ("samples", "uniform")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class DataConfig:
    """Which real data, how it is split between the server (public) and the clients."""

    dataset: str = "fashion_mnist"
    """fashion_mnist (offline, Debian package) | fashion_mnist_textured (its garments over natural-photo crops, made
    offline: paper_repro.backgrounds) | cifar10 (torchvision download) | synthetic_blobs (tests). ours"""
    public_size: int = 10_000
    """Real training images held by the server to train the FM; no client sees them. ours"""
    client_size: int = 0
    """Real training images spread over the clients (0 = all that remain after the public split). ours"""
    test_size: int = 0
    """Clean test images used for ACC/ASR (0 = the whole test split). ours"""
    test_half: str = "all"
    """Which test images ACC/ASR are measured on: all | even (the images of even index: where knobs are selected) |
    odd (the other half: where selected settings are reported). The defense study selects on one half and reports
    on the other (docs/protocol.md). ours"""
    partition: str = "iid"
    """iid | dirichlet | shards. [C: 2401.10375 uses IID and Dirichlet]"""
    beta: float = 0.5
    """Dirichlet concentration β (only for partition=dirichlet). [C: 0.1 in 2401.10375; 0.5 DESIGN example]"""
    min_size: int = 10
    """Minimum samples per client under Dirichlet (resampled until met). [C: FRJ-AJ ≥ 20; ours 10]"""
    shards_per_client: int = 2
    """Label shards per client (only for partition=shards). [C: McMahan et al.; author sampling.py]"""
    split_seed: int = 0
    """Seed of the public/client/test split. Fixed (not the run seed) so that the FM trained on the public split
    never saw any client's data, whatever the run seed. ours"""

    def __post_init__(self) -> None:
        _check_types(self, "data")
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.partition", self.partition, PARTITIONS)
        _check(self.beta > 0, f"data.beta={self.beta} must be > 0 (Dirichlet concentration; 0.1 = very skewed)")
        _check(self.public_size > 0, "data.public_size must be > 0: the FM needs public images to learn from")
        _check(self.client_size >= 0 and self.test_size >= 0, "data.client_size/test_size must be >= 0 (0 = all)")
        _choice("data.test_half", self.test_half, TEST_HALVES)
        _check(self.min_size >= 1, "data.min_size must be >= 1")
        _check(self.shards_per_client >= 1, "data.shards_per_client must be >= 1")
        _check(self.split_seed >= 0, f"data.split_seed={self.split_seed} must be >= 0")


@dataclass(frozen=True)
class FMConfig:
    """The foundation model that draws the server's synthetic set."""

    source: str = "ddpm"
    """ddpm: our class-conditional diffusion model | stable_diffusion: local text-to-image weights |
    real_public: skip the FM and use the public real images (ablation). ours"""
    checkpoint: str = PLAIN_FM
    """Folder of the FM weights (relative to the repository root, or absolute). ours"""
    n_per_class: int = 200
    """Synthetic images per class. [C: 1,000/class in 2401.10375; fewer in quick to fit 2 CPU cores]"""
    num_inference_steps: int = 25
    """DDIM sampling steps. ours"""
    guidance_scale: float = 2.0
    """Classifier-free guidance weight (1.0 = plain conditional sampling). ours"""
    eta: float = 1.0
    """DDIM η: 0 deterministic DDIM, 1 ancestral (DDPM-like); why 1, in docs/methods.md ("Sampler settings"). ours"""
    batch_size: int = 250
    """Images per sampling batch. Part of the synthetic set's cache key: the noise is drawn batch by batch, so
    another batch size draws other images. ours"""
    precision: str = "fp32"
    """UNet arithmetic while sampling (ddpm source): fp32 | bf16 (``torch.autocast``; the scheduler stays fp32).
    bf16 draws different images from the same seed, so it is part of the cache key; fp32 keeps the key it had
    before this option existed. benchmarks/speed.py reports its speed and the real-classifier accuracy of both. ours"""
    sample_seed: int = 0
    """Seed of the synthetic draw. Fixed by default: the server queries the FM once, and every run of a grid
    (all seeds, attacks, defenses) shares that synthetic set; poisoning still varies with the run seed. ours"""
    prompt_template: str = "a photo of a {}"
    """Class prompt for stable_diffusion. [C: 2311.00144 used class prompts such as 'an airplane']"""

    def __post_init__(self) -> None:
        _check_types(self, "fm")
        _choice("fm.source", self.source, FM_SOURCES)
        _check(self.n_per_class >= 1, "fm.n_per_class must be >= 1")
        _check(self.num_inference_steps >= 1, "fm.num_inference_steps must be >= 1")
        _check(self.guidance_scale >= 0, "fm.guidance_scale must be >= 0")
        _check(0 <= self.eta <= 1, "fm.eta must be in [0, 1]")
        _check(self.batch_size >= 1, "fm.batch_size must be >= 1")
        _choice("fm.precision", self.precision, PRECISIONS)
        _check(self.sample_seed >= 0, f"fm.sample_seed={self.sample_seed} must be >= 0")
        _check(bool(self.checkpoint.strip()), "fm.checkpoint='' must name the folder of the FM weights")
        _check("{}" in self.prompt_template, "fm.prompt_template needs a '{}' where the class name goes")


@dataclass(frozen=True)
class ModelConfig:
    """The classifier trained by FL."""

    name: str = "cnn"
    """tiny (smoke) | cnn (quick) | resnet18 (CIFAR ResNet-18, paper). [C: docs/paper.md for resnet18]"""
    channels_last: bool = False
    """Train in channels_last memory format (faster on CPU, same numbers up to float rounding). ours"""

    def __post_init__(self) -> None:
        _check_types(self, "model")
        _choice("model.name", self.name, MODELS)


@dataclass(frozen=True)
class AttackConfig:
    """Who attacks and how: the FM attack poisons the synthetic set, the classic one uses malicious clients."""

    kind: str = "none"
    """Registry name, see ``paper_repro.attacks.names()``: none | classic (malicious clients) | fm (poisoned
    synthetic data) | both. [C: 2410.17573 abstract]"""
    trigger: str = "badnets"
    """badnets (white square, bottom-right) | blend (blended random pattern) | random_patch (the square at a random
    position per image) | sig (full-image sinusoid, Barni et al. 2019) | dba (four bars, Xie et al. 2020; the
    ``dba`` attack gives each malicious client one bar). [C: PAKDD, 3×3 white square]"""
    trigger_size: int = 3
    """Side of the BadNets square in pixels. [C: PAKDD]"""
    trigger_position: str = "corner"
    """Where the BadNets square sits: corner (bottom-right) [C: PAKDD] | centre | garment (upper middle, on the
    torso): the defense study's placements. ours"""
    blend_alpha: float = 0.2
    """Blend weight of the pattern for trigger=blend (Chen et al. 2017 use 0.2); amplitude as a share of the pixel
    range for trigger=sig (Barni et al. 2019 use 20/255 ≈ 0.078). [C]"""
    target_class: int = 0
    """All-to-one target label. [C: 2401.10375]"""
    mapping: str = "all_to_one"
    """all_to_one: triggered images get ``target_class`` [C: 2401.10375]; all_to_all: class c gets c + 1 mod C, every
    class is poisoned, the ASR counts hits on c + 1 (Gu et al. 2017). ours"""
    poison_ratio: float = 0.2
    """FM attack: fraction of each non-target class of the synthetic set triggered and relabelled. [C: 2401.10375]"""
    fm_stages: tuple[str, ...] = ("init", "kd")
    """Where the poisoned synthetic set is used: init (pre-training) and/or kd (fusion). [C: 2401.10375]"""
    num_malicious: int = 1
    """Classic attack: number of malicious clients, drawn once from the seed. [C: author code default 1]"""
    client_poison_ratio: float = 0.2
    """Classic attack: fraction of a malicious client's non-target samples triggered. [C: FRJ-AJ len // 5]"""
    boost: float = 1.0
    """Classic attack: scale of the malicious update, θ_g + boost·Δ (9 = BD_amp 8, model replacement = K/m). [C]"""
    schedule: str = "sampled"
    """Client attacks: sampled (each round's clients drawn uniformly; the attackers among them vary with the seed,
    from none to all) | fixed (every round holds exactly ``attackers_per_round`` malicious clients, drawn from the
    malicious ones, the rest from the benign ones: the single-attacker setting of FLAME's and BackFed's
    evaluations). Every run records its attackers per round (``num_attackers``). [C: FLAME, BackFed]"""
    attackers_per_round: int = 1
    """schedule=fixed: malicious clients in every round. [C: FLAME, BackFed]"""
    last_round: int = 0
    """Client attacks: the last round in which the malicious clients attack (0: every round). After it they train
    honestly on their clean data and send honest updates, so that the rounds after it measure how long the backdoor
    lasts (Neurotoxin's durability). [C: Zhang et al. 2022]"""
    params: dict = field(default_factory=dict)
    """Parameters of the attack beyond the fields above (its ``Params``; docs/components.md). ours"""

    def __post_init__(self) -> None:
        _check_types(self, "attack")
        _check(
            isinstance(self.kind, str) and bool(self.kind),
            "attack.kind must be an attack name, see paper_repro.attacks.names()",
        )
        _choice("attack.trigger", self.trigger, TRIGGERS)
        _choice("attack.mapping", self.mapping, MAPPINGS)
        _fraction("attack.poison_ratio", self.poison_ratio)
        _fraction("attack.client_poison_ratio", self.client_poison_ratio)
        _fraction("attack.blend_alpha", self.blend_alpha)
        _check(
            self.blend_alpha > 0 or self.trigger not in ("sig", "blend"),
            f"attack.blend_alpha=0 with attack.trigger={self.trigger!r}: the trigger would change no pixel; give "
            "it a strength above 0",
        )
        _check(self.trigger_size >= 1, "attack.trigger_size must be >= 1")
        _choice("attack.trigger_position", self.trigger_position, TRIGGER_POSITIONS)
        _check(
            self.trigger_position == "corner" or self.trigger == "badnets",
            f"attack.trigger_position={self.trigger_position!r} places the BadNets square only; "
            f"attack.trigger={self.trigger!r} has no position: leave trigger_position 'corner'",
        )
        _check(self.target_class >= 0, "attack.target_class must be >= 0")
        _check(self.num_malicious >= 0, "attack.num_malicious must be >= 0")
        _choice("attack.schedule", self.schedule, SCHEDULES)
        _check(self.attackers_per_round >= 1, "attack.attackers_per_round must be >= 1")
        _check(
            isinstance(self.last_round, int) and self.last_round >= 0,
            f"attack.last_round={self.last_round!r} must be a round number >= 1, or 0 for an attack in every round",
        )
        _check(
            self.schedule != "fixed" or self.attackers_per_round <= self.num_malicious,
            f"attack.schedule='fixed' with attack.attackers_per_round={self.attackers_per_round} needs at least as "
            f"many malicious clients; attack.num_malicious={self.num_malicious}: raise it or lower attackers_per_round",
        )
        _positive("attack.boost", self.boost)
        _check(
            isinstance(self.fm_stages, (tuple, list)) and len(self.fm_stages) >= 1,
            f"attack.fm_stages={self.fm_stages!r} must list at least one of {list(FM_STAGES)}",
        )
        stages = tuple(self.fm_stages)
        object.__setattr__(self, "fm_stages", stages)
        for s in stages:
            _choice("attack.fm_stages[]", s, FM_STAGES)
        _check(isinstance(self.params, dict), f"attack.params={self.params!r} must be a dict of keyword arguments")


@dataclass(frozen=True)
class FLConfig:
    """The FM-integrated FL loop (FedDF-style fusion, docs/paper.md)."""

    num_clients: int = 20
    """K, number of clients. [C: K = 100 cross-device in 2401.10375; fewer in quick]"""
    clients_per_round: int = 5
    """Clients sampled per round (without replacement). [C: 10 % of K]"""
    num_rounds: int = 10
    """Communication rounds. [C: 50 in 2311.00144/PAKDD]"""
    local_epochs: int = 1
    """Local epochs per round. [C: 3 in text scripts; R for images]"""
    lr: float = 0.01
    """Local SGD learning rate. [C: FRJ-AJ 0.01]"""
    momentum: float = 0.5
    """SGD momentum (local, init, KD). [C: FRJ-AJ 0.5]"""
    batch_size: int = 32
    """Batch size for local training, init and KD. [R: 32]"""
    init_epochs: int = 10
    """Supervised pre-training epochs on the synthetic set. [C: FRJ-AJ pre_epochs 10]"""
    init_lr: float = 0.01
    """Pre-training learning rate. [C: FRJ-AJ pre_lr 0.01]"""
    kd_epochs: int = 3
    """Distillation epochs over the synthetic set per round. [C: FRJ-AJ KD_ep 3]"""
    kd_lr: float = 5e-4
    """Distillation learning rate. [C: FRJ-AJ lr_KD 5e-4]"""
    kd_alpha: float = 0.5
    """Weight of the KL term in α·τ²·KL + (1−α)·CE. [C: FRJ-AJ 0.5]"""
    kd_temperature: float = 1.0
    """Distillation temperature τ. [C: FRJ-AJ 1]"""
    fusion: bool = True
    """Run server fusion (FedDF) each round; False = plain FedAvg after synthetic init (2311.00144). [C]"""
    weighting: str = "samples"
    """FedAvg weights: samples (FedAvg) | uniform (author code). [C: docs/paper.md, traps]"""
    precision: str = "fp32"
    """The FL loop's arithmetic: fp32 (the reference) | bf16, the fast mode (bf16 autocast in the initial, local and
    fusion training, the FedDF teachers and evaluation; weights, optimiser state, updates, losses and defenses stay
    fp32). bf16 changes the numbers (docs/speed.md), so it is part of the run key; fp32 runs keep their old key. ours"""

    def __post_init__(self) -> None:
        _check_types(self, "fl")
        _choice("fl.precision", self.precision, PRECISIONS)
        _check(self.num_clients >= 1, "fl.num_clients must be >= 1")
        _check(
            1 <= self.clients_per_round <= self.num_clients,
            f"fl.clients_per_round={self.clients_per_round} must be in [1, num_clients={self.num_clients}]",
        )
        _check(self.num_rounds >= 0, "fl.num_rounds must be >= 0")
        _check(self.local_epochs >= 1, "fl.local_epochs must be >= 1")
        _check(self.init_epochs >= 0 and self.kd_epochs >= 0, "fl.init_epochs/kd_epochs must be >= 0")
        for n in ("lr", "init_lr", "kd_lr", "kd_temperature"):
            _positive(f"fl.{n}", getattr(self, n))
        _check(0 <= self.momentum < 1, "fl.momentum must be in [0, 1)")
        _check(self.batch_size >= 1, "fl.batch_size must be >= 1")
        _fraction("fl.kd_alpha", self.kd_alpha)
        _choice("fl.weighting", self.weighting, WEIGHTINGS)


@dataclass(frozen=True)
class DefenseConfig:
    """Which defense acts at step 3 (aggregation) and/or step 5 (post-fusion); see paper_repro.defenses."""

    name: str = "none"
    """Registry name, see ``paper_repro.defenses.names()``. ours"""
    params: dict = field(default_factory=dict)
    """Keyword arguments of the defense (documented in its file). ours"""

    def __post_init__(self) -> None:
        _check_types(self, "defense")
        _check(
            isinstance(self.name, str) and bool(self.name),
            "defense.name must be a defense name, see paper_repro.defenses.names()",
        )
        _check(isinstance(self.params, dict), "defense.params must be a dict of keyword arguments")


@dataclass(frozen=True)
class Config:
    """A whole experiment. Build it with :func:`load_config`."""

    profile: str = "quick"
    """smoke | quick | paper: the preset these values started from. ours"""
    seed: int = 0
    """The one seed every random stream is derived from (paper_repro.rng). [R: seeds {0, 1, 2}]"""
    data: DataConfig = field(default_factory=DataConfig)
    fm: FMConfig = field(default_factory=FMConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)

    def __post_init__(self) -> None:
        _check_types(self, "")
        _choice("profile", self.profile, PROFILES)
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed must be a non-negative integer")
        _check(
            self.attack.num_malicious <= self.fl.num_clients,
            f"attack.num_malicious={self.attack.num_malicious} exceeds fl.num_clients={self.fl.num_clients}",
        )
        a, fl = self.attack, self.fl
        _check(
            a.schedule != "fixed"
            or (
                a.attackers_per_round <= fl.clients_per_round
                and fl.num_clients - a.num_malicious >= fl.clients_per_round - a.attackers_per_round
            ),
            f"attack.schedule='fixed': each round needs attack.attackers_per_round={a.attackers_per_round} malicious "
            f"and {fl.clients_per_round} - {a.attackers_per_round} benign clients of fl.num_clients={fl.num_clients} "
            f"(attack.num_malicious={a.num_malicious} malicious); lower attackers_per_round or num_malicious",
        )
        _check(
            a.last_round < fl.num_rounds or not a.last_round,
            f"attack.last_round={a.last_round} with fl.num_rounds={fl.num_rounds}: the attack would never stop, so no "
            "round measures durability; set it below num_rounds (or 0 for an attack in every round)",
        )
        _check(
            self.attack.target_class < num_classes(self.data.dataset),
            f"attack.target_class={self.attack.target_class} is not a class of {self.data.dataset} "
            f"(0..{num_classes(self.data.dataset) - 1})",
        )
        _check(
            not (
                self.data.dataset == "fashion_mnist_textured"
                and self.fm.source == "ddpm"
                and self.fm.checkpoint.rstrip("/") == PLAIN_FM
            ),
            f"data.dataset='fashion_mnist_textured' with fm.checkpoint={PLAIN_FM!r}: that FM was trained on plain "
            "Fashion-MNIST, so its synthetic set would not look like the clients' data; train one on the textured "
            "public split (python -m paper_repro.fm train --out data/fm/fashion_mnist_textured_ddpm, with "
            "data.dataset set) and name it in fm.checkpoint",
        )
        size = image_shape(self.data.dataset)[-1]
        _check(
            self.attack.trigger_size <= size,
            f"attack.trigger_size={self.attack.trigger_size} is larger than the {size}×{size} image",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def num_classes(dataset: str) -> int:
    return 10


def image_shape(dataset: str) -> tuple[int, int, int]:
    return {"cifar10": (3, 32, 32), "synthetic_blobs": (1, 12, 12)}.get(dataset, (1, 28, 28))  # Fashion-MNIST's
