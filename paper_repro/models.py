"""Classifiers: a tiny net (smoke), a small CNN (quick, Fashion-MNIST) and the CIFAR ResNet-18 (paper); and the
flat view of a model's state (one vector) that aggregators and defenses work on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """conv(8)–ReLU–pool–fc: a few thousand parameters, for smoke tests."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 12):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.fc = nn.Linear(8 * (size // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu1(self.conv1(x)), 2)  # (B, 8, H/2, W/2)
        return self.fc(x.flatten(1))


class SmallCNN(nn.Module):
    """conv(32)–ReLU–pool–conv(64)–ReLU–pool–fc(128)–ReLU–fc: ~0.4 M parameters (quick profile). ours"""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc1 = nn.Linear(64 * (size // 4) ** 2, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu1(self.conv1(x)), 2)  # (B, 32, H/2, W/2)
        x = F.max_pool2d(self.relu2(self.conv2(x)), 2)  # (B, 64, H/4, W/4)
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    """conv3×3–BN–ReLU–conv3×3–BN + shortcut, ReLU. [C: docs/paper.md]"""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3×3 stem, no max-pool, 4 stages of 2 BasicBlocks (64/128/256/512), avg-pool 4, linear.
    [C: backdoor_FM_FL/resnet.py, MM-BD, MMAC; docs/paper.md]"""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, size: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        chans, strides, cin, layers = (64, 128, 256, 512), (1, 2, 2, 2), 64, []
        for c, s in zip(chans, strides):
            layers.append(nn.Sequential(BasicBlock(cin, c, s), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))  # = avg_pool2d(4) on 32×32 inputs


MODEL_REGISTRY = {"tiny": TinyNet, "cnn": SmallCNN, "resnet18": ResNet18}


def build_model(name: str, shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised model; the weights depend only on ``seed`` (global RNG state is restored)."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_REGISTRY)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODEL_REGISTRY[name](in_channels=shape[0], num_classes=num_classes, size=shape[-1])


def state_keys(model: nn.Module) -> list[str]:
    """Floating-point state entries (parameters and BN running statistics; never integer counters such as
    ``num_batches_tracked``, docs/paper.md, traps)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def flat_state(model: nn.Module) -> torch.Tensor:
    """All floating-point state as one vector (P,)."""
    sd = model.state_dict()
    return torch.cat([sd[k].detach().reshape(-1).float() for k in state_keys(model)])


def load_flat_state(model: nn.Module, vec: torch.Tensor) -> nn.Module:
    """Write a (P,) vector back into ``model``'s floating-point state (in place on ``model``; returns it)."""
    sd = model.state_dict()
    i = 0
    with torch.no_grad():
        for k in state_keys(model):
            n = sd[k].numel()
            sd[k].copy_(vec[i : i + n].view_as(sd[k]))
            i += n
    if i != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, model state has {i}")
    return model
