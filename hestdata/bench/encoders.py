"""Encoders: uint8 images (B, 3, H, W) in, (B, D) float out — with a name, input size, normalisation and
precision, and a fingerprint that keys the embedding cache.

Adapters: a timm model name (optionally a local checkpoint), a ``torch.nn.Module`` with its preprocessing, a
plain callable, and the entry-point group ``hestdata.encoders`` (a third-party package registers
``name = "pkg.module:factory"``; the factory returns an :class:`Encoder`). Published pathology encoders resolve
to their timm / hub definitions; without network access they need a local checkpoint. Weight-free baselines are
built in and named as such: ``color-stats`` (stain and texture statistics) and ``random-vit-s16`` (a randomly
initialised ViT-S/16, seed 0).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hestdata.errors import InputError, require_extra


def require_ml() -> None:
    """One line naming the ``ml`` extra when torch, timm or scikit-learn is missing, before any work (the modules
    that run encoders call it on import: encoders here, the runner; embedding imports this module)."""
    for module in ("torch", "timm", "sklearn"):
        require_extra(module, "ml", "the benchmark harness (hestdata.bench)")


require_ml()

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENTRY_POINT_GROUP = "hestdata.encoders"


@dataclass
class Encoder:
    """A frozen image encoder.

    ``forward`` receives a float32 tensor (B, 3, S, S): scaled to [0, 1], resized to ``input_size`` (if set)
    and normalised with ``mean``/``std`` (if set); ``raw_uint8=True`` hands the uint8 batch over untouched.
    """

    name: str
    forward: Callable[[Any], Any]
    input_size: int | None = 224
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    precision: str = "fp32"  # fp32 | bf16 | fp16
    weights_sha256: str | None = None
    module: Any = None
    raw_uint8: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. pooling, architecture

    @property
    def fingerprint(self) -> str:
        """sha256 of everything that changes the embeddings: name, weights, preprocessing, precision, pooling."""
        doc = {"name": self.name, "weights": self.weights_sha256, "input_size": self.input_size,
               "mean": self.mean, "std": self.std, "precision": self.precision, "raw": self.raw_uint8,
               "extra": self.extra}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def to(self, device: Any) -> Encoder:
        if self.module is not None:
            self.module.to(device)
        return self

    def preprocess(self, images: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if self.raw_uint8:
            return images
        x = images.float().div_(255.0)
        if self.input_size and (x.shape[-1] != self.input_size or x.shape[-2] != self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if self.mean is not None and self.std is not None:
            m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - m) / s
        return x

    def __call__(self, images: Any) -> Any:
        """(B, D) float32 embeddings of a uint8 batch, under ``inference_mode`` and autocast at ``precision``."""
        import torch

        x = self.preprocess(images)
        dev = x.device.type
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode():
            if dtype is not None and (dev == "cuda" or dtype == torch.bfloat16):
                with torch.autocast(device_type=dev, dtype=dtype):
                    out = self.forward(x)
            else:
                out = self.forward(x)
        return out.float()


def _state_hash(module: Any) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def from_module(module: Any, name: str, *, input_size: int | None = 224, mean: tuple[float, ...] | None = IMAGENET_MEAN,
                std: tuple[float, ...] | None = IMAGENET_STD, precision: str = "fp32") -> Encoder:
    """Wrap a ``torch.nn.Module`` mapping a normalised float batch to (B, D)."""
    module.eval()
    return Encoder(name, module, input_size, mean, std, precision, _state_hash(module), module)


def _value_digest(h: Any, v: Any, depth: int = 0) -> None:
    """Feed a value that can change a callable's output into ``h`` (arrays and tensors by content)."""
    import types

    if depth > 6:
        h.update(b"<deep>")
    elif isinstance(v, types.CodeType):
        h.update(v.co_code)
        h.update(repr((v.co_names, v.co_varnames, v.co_freevars)).encode())
        for c in v.co_consts:
            _value_digest(h, c, depth + 1)
    elif isinstance(v, types.FunctionType):
        _function_digest(h, v, depth + 1)
    elif type(v).__module__.startswith("torch") and type(v).__name__ in ("Tensor", "Parameter"):
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    elif not isinstance(v, type) and callable(getattr(v, "state_dict", None)) and hasattr(v, "parameters"):
        h.update(_state_hash(v).encode())  # a torch module
    elif type(v).__module__ == "numpy" and type(v).__name__ == "ndarray":
        h.update(str(v.dtype).encode() + str(v.shape).encode() + v.tobytes())
    elif isinstance(v, dict):
        for k in sorted(v, key=repr):
            h.update(repr(k).encode())
            _value_digest(h, v[k], depth + 1)
    elif isinstance(v, list | tuple | set | frozenset):
        for x in (sorted(v, key=repr) if isinstance(v, set | frozenset) else v):
            _value_digest(h, x, depth + 1)
    else:
        h.update(repr(v).encode())


def _function_digest(h: Any, fn: Any, depth: int = 0) -> None:
    _value_digest(h, fn.__code__, depth)
    _value_digest(h, fn.__defaults__ or (), depth + 1)
    _value_digest(h, fn.__kwdefaults__ or {}, depth + 1)
    for cell in fn.__closure__ or ():
        try:
            _value_digest(h, cell.cell_contents, depth + 1)
        except ValueError:  # an empty cell
            h.update(b"<empty>")
    for g in fn.__code__.co_names:  # module-level values the function reads (not modules or classes)
        v = fn.__globals__.get(g)
        if v is not None and not isinstance(v, type) and type(v).__name__ != "module":
            h.update(g.encode())
            _value_digest(h, v, depth + 1)


def code_fingerprint(fn: Callable[[Any], Any]) -> str:
    """sha256 of what determines a callable's output: its bytecode and constants, default arguments, closure
    values and the module-level values it reads (arrays and tensors by content); for a callable object, its
    ``__call__`` and its attributes. Two different lambdas named alike, or an edited function, never share it."""
    import types

    h = hashlib.sha256()
    if isinstance(fn, types.FunctionType | types.MethodType):
        f = fn.__func__ if isinstance(fn, types.MethodType) else fn
        _function_digest(h, f)
        if isinstance(fn, types.MethodType):
            _value_digest(h, vars(fn.__self__) if hasattr(fn.__self__, "__dict__") else repr(fn.__self__))
    elif hasattr(fn, "state_dict"):
        h.update(_state_hash(fn).encode())
    else:
        call = type(fn).__call__
        if isinstance(call, types.FunctionType):
            _function_digest(h, call)
        _value_digest(h, vars(fn) if hasattr(fn, "__dict__") else repr(fn))
    return h.hexdigest()


def from_callable(fn: Callable[[Any], Any], name: str, *, version: str = "1", raw_uint8: bool = True,
                  input_size: int | None = None, mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None) -> Encoder:
    """Wrap a plain function. Its cache key covers its code, closure values and defaults
    (:func:`code_fingerprint`), so a changed function never reuses stale embeddings; ``version`` is kept for
    changes the code cannot show (e.g. an external file it reads)."""
    return Encoder(name, fn, input_size, mean, std, "fp32", None, None, raw_uint8,
                   {"version": version, "code": code_fingerprint(fn)})


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(path, "checkpoint holds no state dict")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Can the Hugging Face Hub be reached at all? (One TCP connect, so that an offline machine fails at once
    instead of retrying a download for minutes.)"""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub in offline mode for the block (cache only: an absent file fails immediately)."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hub

    old = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = old


def from_timm(arch: str, *, checkpoint: str | Path | None = None, pretrained: bool = False, name: str | None = None,
              precision: str = "fp32", **kwargs: Any) -> Encoder:
    """A timm model (head removed: ``num_classes=0``), weights from ``checkpoint`` (local) or timm/HF hub."""
    import timm

    download = pretrained and checkpoint is None
    offline = download and not _hub_reachable()
    try:
        with _hub_offline(offline):
            model = timm.create_model(arch, pretrained=download, num_classes=0, **kwargs)
    except Exception as exc:
        if offline:
            raise InputError(None, f"the weights of {arch!r} are not on disk and the Hugging Face Hub cannot be reached",
                             "pass --checkpoint with local weights, or --random-init for an untrained model") from None
        raise InputError(None, f"cannot build timm model {arch!r}: {type(exc).__name__}: {exc}",
                         "the weights may need network access or a gated-model login; pass a local checkpoint "
                         "or --random-init") from exc
    if checkpoint is not None:
        sd = _load_checkpoint(Path(checkpoint))
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc.", "classifier."))}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise InputError(checkpoint, f"checkpoint does not fit {arch}: {len(missing)} missing, "
                                         f"{len(unexpected)} unexpected keys (e.g. {(missing or unexpected)[:3]})")
    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    enc = from_module(model, name or f"timm:{arch}", input_size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      precision=precision)
    enc.extra = {"arch": arch, "pool": getattr(model, "global_pool", None)}
    return enc


# Published pathology encoders: (timm hub id, local architecture, timm kwargs). Loading from the hub needs network
# access and, for gated models, an accepted licence; with ``checkpoint=`` the local architecture is built instead.
PUBLISHED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "uni": ("hf-hub:MahmoodLab/uni", "vit_large_patch16_224", {"init_values": 1e-5, "dynamic_img_size": True}),
    "uni2-h": ("hf-hub:MahmoodLab/UNI2-h", "vit_giant_patch14_224",
               {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True,
                "reg_tokens": 8, "dynamic_img_size": True}),
    "h-optimus-0": ("hf-hub:bioptimus/H-optimus-0", "vit_giant_patch14_reg4_dinov2",
                    {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False}),
    "gigapath": ("hf_hub:prov-gigapath/prov-gigapath", "vit_giant_patch14_dinov2",
                 {"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
                  "init_values": 1e-5, "mlp_ratio": 5.33334}),
    "phikon-v2": ("hf-hub:owkin/phikon-v2", "vit_large_patch16_224", {}),
    "resnet50": ("resnet50.tv_in1k", "resnet50", {}),
}
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
# model-card preprocessing: (input size px, mean, std); used by every route that loads these encoders
PUBLISHED_PREPROCESSING: dict[str, tuple[int, tuple[float, ...], tuple[float, ...]]] = {
    "uni": (224, IMAGENET_MEAN, IMAGENET_STD), "uni2-h": (224, IMAGENET_MEAN, IMAGENET_STD),
    "phikon-v2": (224, IMAGENET_MEAN, IMAGENET_STD), "gigapath": (224, IMAGENET_MEAN, IMAGENET_STD),
    "virchow": (224, IMAGENET_MEAN, IMAGENET_STD), "virchow2": (224, IMAGENET_MEAN, IMAGENET_STD),
    "h-optimus-0": (224, HOPTIMUS_MEAN, HOPTIMUS_STD), "h-optimus-1": (224, HOPTIMUS_MEAN, HOPTIMUS_STD),
    "resnet50": (224, IMAGENET_MEAN, IMAGENET_STD),
}


def published_preprocessing(name: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input_size, mean, std) from the encoder's model card (UNI, UNI2-h, Virchow/Virchow2, Phikon-v2,
    H-optimus-0/1, Prov-GigaPath, ResNet50); a clear error for a name whose card we do not carry."""
    key = name.lower()
    if key not in PUBLISHED_PREPROCESSING:
        raise InputError(None, f"no model-card preprocessing known for {name!r}",
                         f"known: {', '.join(sorted(PUBLISHED_PREPROCESSING))}; pass input_size/mean/std yourself")
    return PUBLISHED_PREPROCESSING[key]


NOT_TIMM = {"conch": "CONCH ships its own package (pip install conch from MahmoodLab); wrap it with from_module",
            "virchow": "Virchow needs timm's SwiGLUPacked MLP and a gated login; wrap it with from_module",
            "ctranspath": "CTransPath needs its modified Swin (TransPath); wrap it with from_module",
            "phikon": "Phikon (v1) is a transformers ViT; wrap it with from_module"}


def color_stats() -> Encoder:
    """Weight-free baseline: per-channel mean/std of RGB and of haematoxylin/eosin/DAB optical densities,
    8-bin intensity histograms per channel, and gradient-magnitude mean/std (38 features)."""
    import torch

    # Ruifrok & Johnston stain vectors (rows: H, E, DAB), as in scikit-image's rgb2hed
    rgb_from_hed = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32)
    hed_from_rgb = torch.linalg.inv(rgb_from_hed)

    def fn(images: Any) -> Any:
        x = images.float() / 255.0
        b, c = x.shape[:2]
        od = -torch.log(torch.clamp(x, min=1e-6)).reshape(b, c, -1)
        # H/E/DAB densities are a linear map W of the optical densities: their means are W of the OD means and
        # their standard deviations come from the 3x3 OD covariance (no per-pixel H/E/DAB image is formed)
        od_mean = od.mean(2)
        centred = od - od_mean[:, :, None]
        # (products summed by torch's cascaded sum: a float32 bmm loses three digits here)
        cov = torch.stack([torch.stack([(centred[:, i] * centred[:, j]).sum(1) for j in range(c)], 1)
                           for i in range(c)], 1) / max(centred.shape[2] - 1, 1)
        w = hed_from_rgb.to(x.device)
        hed_std = torch.sqrt(torch.clamp(torch.einsum("cd,bce,ed->bd", w, cov, w), min=0))
        feats = [x.mean((2, 3)), x.std((2, 3)), od_mean @ w, hed_std]
        # 8 bins of [0, 1] per channel, the top edge in the last bin (histc's rule, as floor(8x) clamped to 7)
        n = x.shape[2] * x.shape[3]
        hist = torch.stack([torch.histc(x[i, k], bins=8, min=0.0, max=1.0) for i in range(b) for k in range(c)])
        hist = (hist / n).reshape(b, -1)
        grey = x.mean(1)
        gx = grey[:, :, 1:] - grey[:, :, :-1]
        gy = grey[:, 1:, :] - grey[:, :-1, :]
        mag = torch.sqrt(gx[:, :-1, :] ** 2 + gy[:, :, :-1] ** 2)
        feats += [hist, mag.mean((1, 2))[:, None], mag.std((1, 2))[:, None]]
        return torch.cat(feats, dim=1)

    return from_callable(fn, "color-stats", version="1")


def random_vit_s16(seed: int = 0) -> Encoder:
    """Weight-free baseline: ViT-S/16 (timm ``vit_small_patch16_224``), random init with a fixed seed, CLS pooling."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    enc = from_module(model, "random-vit-s16")
    enc.extra = {"arch": "vit_small_patch16_224", "pool": model.global_pool, "seed": seed}
    return enc


BUILTIN: dict[str, Callable[[], Encoder]] = {"color-stats": color_stats, "random-vit-s16": random_vit_s16}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Encoder names this installation can resolve, with where each comes from."""
    out = {k: "built-in, weight-free baseline" for k in BUILTIN}
    out.update({k: f"entry point {ep.value}" for k, ep in _entry_points().items()})
    out.update({k: f"published ({hub}); needs its weights" for k, (hub, _, _) in PUBLISHED.items()})
    out.update({k: f"not loadable by name: {why}" for k, why in NOT_TIMM.items()})
    out["timm:<arch>"] = "any timm architecture (random init unless --checkpoint / pretrained)"
    out["library-size"] = "baseline without images: log1p total counts per spot (expression/retrieval tasks)"
    return out


def _published(key: str, checkpoint: str | Path | None, precision: str, **overrides: Any) -> Encoder:
    """A published encoder from its local checkpoint (architecture built here) or the hub, always with its
    model card's preprocessing (never timm's defaults, which differ for several of them)."""
    hub, arch, kwargs = PUBLISHED[key]
    size, mean, std = published_preprocessing(key)
    if checkpoint is not None or overrides:
        kw = {k: v for k, v in {**kwargs, **overrides}.items() if k != "num_classes"}
        enc = from_timm(arch, checkpoint=checkpoint, name=key, precision=precision, **kw)
    else:
        enc = from_timm(hub, pretrained=True, name=key, precision=precision)
    enc.input_size, enc.mean, enc.std = size, tuple(mean), tuple(std)
    return enc


def load_encoder(spec: str | Encoder | Any, *, checkpoint: str | Path | None = None, pretrained: bool = True,
                 precision: str = "fp32") -> Encoder:
    """Resolve an encoder: an :class:`Encoder`, a module, a callable, a built-in or entry-point name,
    ``timm:<arch>``, or a published name (``uni``, ``h-optimus-0`` …, with ``checkpoint`` offline)."""
    if isinstance(spec, Encoder):
        return spec
    if not isinstance(spec, str):
        import torch

        if isinstance(spec, torch.nn.Module):
            return from_module(spec, type(spec).__name__, precision=precision)
        if callable(spec):
            return from_callable(spec, getattr(spec, "__name__", "callable"))
        raise TypeError(f"cannot make an encoder from {type(spec).__name__}")
    key = spec.lower()
    if key in BUILTIN:
        return BUILTIN[key]()
    eps = _entry_points()
    if spec in eps:
        enc = eps[spec].load()()
        if not isinstance(enc, Encoder):
            raise TypeError(f"entry point {spec!r} returned {type(enc).__name__}, not an Encoder")
        return enc
    if key.startswith("timm:"):
        return from_timm(spec[5:], checkpoint=checkpoint, pretrained=pretrained and checkpoint is None,
                         precision=precision)
    if key in PUBLISHED:
        return _published(key, checkpoint, precision)
    if key in NOT_TIMM:
        raise InputError(None, f"encoder {spec!r}: {NOT_TIMM[key]}")
    raise InputError(None, f"unknown encoder {spec!r}; available: {', '.join(sorted(available()))}")
