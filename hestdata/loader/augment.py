"""Batch augmentations that run wherever the batch is (the GPU after nvJPEG, or the CPU): random flips and
90° rotations per image, brightness/contrast jitter, and normalisation to float. Deterministic with a seed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class BatchAugment:
    """Callable on a uint8 (B, 3, H, W) tensor; returns float32 (normalised) or uint8 (``normalize=None``).

    ``mean``/``std`` are on the 0–1 scale (ImageNet's by default).
    """

    def __init__(self, flip: bool = True, rot90: bool = True, brightness: float = 0.0, contrast: float = 0.0,
                 normalize: tuple[Sequence[float], Sequence[float]] | None = ((0.485, 0.456, 0.406),
                                                                             (0.229, 0.224, 0.225)),
                 seed: int | None = None) -> None:
        self.flip, self.rot90, self.brightness, self.contrast = flip, rot90, brightness, contrast
        self.normalize, self.seed = normalize, seed
        self._gen: dict[Any, Any] = {}

    def _generator(self, device: Any) -> Any:
        import torch

        if self.seed is None:
            return None
        key = str(device)
        if key not in self._gen:
            self._gen[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen[key]

    def __call__(self, x: Any) -> Any:
        import torch

        b = x.shape[0]
        dev = x.device
        gen = self._generator(dev)
        if self.flip:
            m = torch.rand(b, device=dev, generator=gen) < 0.5
            x = torch.where(m[:, None, None, None], x.flip(-1), x)
        if self.rot90 and x.shape[-1] == x.shape[-2]:
            k = torch.randint(0, 4, (b,), device=dev, generator=gen)
            x = torch.stack([torch.rot90(x[i], int(k[i]), dims=(-2, -1)) for i in range(b)]) if b else x
        if self.normalize is None and not (self.brightness or self.contrast):
            return x
        y = x.float() / 255.0
        if self.brightness:
            y = y * (1 + (torch.rand(b, 1, 1, 1, device=dev, generator=gen) * 2 - 1) * self.brightness)
        if self.contrast:
            mean = y.mean(dim=(1, 2, 3), keepdim=True)
            y = (y - mean) * (1 + (torch.rand(b, 1, 1, 1, device=dev, generator=gen) * 2 - 1) * self.contrast) + mean
        y = y.clamp(0, 1)
        if self.normalize is None:
            return (y * 255).round().to(torch.uint8)
        mean_t = torch.tensor(self.normalize[0], device=dev).view(1, -1, 1, 1)
        std_t = torch.tensor(self.normalize[1], device=dev).view(1, -1, 1, 1)
        return (y - mean_t) / std_t
