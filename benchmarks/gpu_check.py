"""The GPU path in one short script (≤ 5 minutes on one H100/H200, no downloads): nvJPEG batched decode, the
end-to-end loader into CUDA tensors, embedding extraction with a random-init ViT-B/16 against a bare forward.

    python benchmarks/gpu_check.py                 # on a machine with CUDA
    python benchmarks/gpu_check.py --quick         # what runs here without one: the CPU parts, small

Data: the real her2st patches of ``benchmarks/_her2st.py`` (224 px at 0.5 µm/px, JPEG q90 4:2:0), built from
../shared/data in the first minute. Printed:

1. bare CPU decode (simplejpeg, 1 core) and bare batched nvJPEG (``torchvision.io.decode_jpeg(list,
   device="cuda")``, batch 256) of the same bytes held in memory, patches/s;
2. **pixels**: every patch decoded on the GPU against the CPU decode — mean |diff| ≤ 1.0 and 99.9th percentile
   ≤ 16 grey levels over all pixels (IDCT and chroma-upsampling rounding differ between libjpeg-turbo and
   nvJPEG; a wrong colour order, a transposed or shifted patch, a wrong patch fails both by far). A mismatch
   exits with status 1;
3. ``PatchDataset(decode="gpu")`` + ``make_loader(device="cuda", pin_memory=True)`` at 2, 4, 8 workers:
   patches/s of uint8 (B, 3, 224, 224) CUDA tensors with their targets (goal ≥ 15,000 on one H100-class GPU);
4. embedding extraction, ViT-B/16 (timm, random init, bf16 autocast, batch 256): through the loader vs a bare
   forward on batches already on the device; the ratio says how much of the model's rate the loader keeps.

Without CUDA, (1) CPU and (3) with ``decode="cpu"`` run and the GPU figures are reported as not measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PATCH = "224px_0.5um"
MEAN_TOL, P999_TOL = 1.0, 16.0


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def jpeg_bytes(ds) -> list[bytes]:  # noqa: ANN001  (a PatchDataset)
    return [bytes(b) for s in ds.samples for b in s.reader.read(np.arange(s.reader.info.n_patches))]


def cpu_decode(raw: list[bytes]) -> tuple[np.ndarray, float]:
    import simplejpeg

    t = time.perf_counter()
    out = np.stack([simplejpeg.decode_jpeg(b, colorspace="RGB") for b in raw])
    return out, _rate(len(raw), time.perf_counter() - t)


def gpu_decode(raw: list[bytes], batch: int, reps: int) -> tuple[np.ndarray, float]:
    import torch
    from torchvision.io import decode_jpeg

    dev = torch.device("cuda")
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
    decode_jpeg(tensors[:batch], device=dev)  # warm-up: nvJPEG handles, memory pools
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        for k in range(0, len(tensors), batch):
            decode_jpeg(tensors[k:k + batch], device=dev)
    torch.cuda.synchronize()
    rate = _rate(len(tensors) * reps, time.perf_counter() - t)
    pix = [im.permute(1, 2, 0).cpu().numpy() for k in range(0, len(tensors), batch)
           for im in decode_jpeg(tensors[k:k + batch], device=dev)]
    return np.stack(pix), rate


def compare(cpu: np.ndarray, gpu: np.ndarray) -> tuple[float, float, bool]:
    d = np.abs(cpu.astype(np.int16) - gpu.astype(np.int16))
    mean, p999 = float(d.mean()), float(np.percentile(d, 99.9))
    return mean, p999, mean <= MEAN_TOL and p999 <= P999_TOL


def loader_rate(root: Path, genes: list[str], decode: str, workers: int, batch: int, epochs: int) -> float:
    import torch

    import hestdata

    ds = hestdata.PatchDataset(root, patch=PATCH, decode=decode, genes=genes)
    cuda = torch.cuda.is_available()
    dl = hestdata.make_loader(ds, batch_size=batch, num_workers=workers, seed=0,
                              device=torch.device("cuda") if cuda else None, pin_memory=cuda)
    for _ in dl:  # warm-up epoch: worker start, shard indices, targets
        pass
    t, n = time.perf_counter(), 0
    for _ in range(epochs):
        for b in dl:
            n += int(b["image"].shape[0])
    if cuda:
        torch.cuda.synchronize()
    return _rate(n, time.perf_counter() - t)


def embedding_rates(root: Path, genes: list[str], workers: int, batch: int, n_batches: int) -> tuple[float, float]:
    """(through the loader, bare forward on device batches), patches/s, ViT-B/16 random init, bf16."""
    import timm
    import torch

    import hestdata

    dev = torch.device("cuda")
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).to(dev).eval()
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255

    def embed(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model((x.float() - mean) / std)

    x = torch.randint(0, 255, (batch, 3, 224, 224), dtype=torch.uint8, device=dev)
    with torch.inference_mode():
        for _ in range(3):
            embed(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n_batches):
            embed(x)
        torch.cuda.synchronize()
        bare = _rate(batch * n_batches, time.perf_counter() - t)
        ds = hestdata.PatchDataset(root, patch=PATCH, decode="gpu", genes=genes)
        dl = hestdata.make_loader(ds, batch_size=batch, num_workers=workers, seed=0, device=dev, pin_memory=True)
        for b in dl:  # warm-up
            embed(b["image"])
        torch.cuda.synchronize()
        t, n = time.perf_counter(), 0
        while n < batch * n_batches:
            for b in dl:
                embed(b["image"])
                n += int(b["image"].shape[0])
        torch.cuda.synchronize()
        through = _rate(n, time.perf_counter() - t)
    return through, bare


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one section, no dense grid, 0 workers")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args(argv)
    import torch

    import hestdata
    from benchmarks._her2st import build_root

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        root = build_root(Path(tmp) / "root", ["C2"] if a.quick else None, grid=not a.quick)
        ds = hestdata.PatchDataset(root, patch=PATCH, decode="cpu")
        genes = ds.genes[:50]
        raw = jpeg_bytes(ds)
        cpu_pix, cpu_rate = cpu_decode(raw)
        print(f"{len(raw)} patches; torch {torch.__version__}; "
              f"{torch.cuda.get_device_name() if cuda else 'no CUDA device'}")
        print(f"(1) bare CPU decode (simplejpeg, 1 core)        {cpu_rate:10,.0f} patches/s")
        ok = True
        if cuda:
            gpu_pix, gpu_rate = gpu_decode(raw, 256, a.epochs)
            mean, p999, ok = compare(cpu_pix, gpu_pix)
            print(f"(1) bare batched nvJPEG (batch 256)            {gpu_rate:10,.0f} patches/s "
                  f"= {gpu_rate / cpu_rate:.1f}x the CPU core")
            print(f"(2) GPU vs CPU pixels: mean |diff| {mean:.3f} (<= {MEAN_TOL}), 99.9th pct {p999:.1f} "
                  f"(<= {P999_TOL}): {'OK' if ok else 'MISMATCH'}")
            for w in (2, 4, 8):
                r = loader_rate(root, genes, "gpu", w, 256, a.epochs)
                print(f"(3) loader -> CUDA tensors, {w} workers          {r:10,.0f} patches/s "
                      f"({r / gpu_rate:.2f}x bare nvJPEG; goal >= 15,000)")
            through, bare = embedding_rates(root, genes, 4, 256, 20)
            print(f"(4) ViT-B/16 bf16: bare forward {bare:,.0f}/s, through the loader {through:,.0f}/s "
                  f"= {through / bare:.2f}x")
        else:
            for w in ((0,) if a.quick else (0, 1, 2)):
                r = loader_rate(root, genes, "cpu", w, 64, 1 if a.quick else a.epochs)
                print(f"(3) loader, CPU decode, {w} workers             {r:10,.0f} patches/s "
                      f"({r / cpu_rate:.2f}x the bare decode)")
            print("(1)-(4) on the GPU: not measured (no CUDA device here)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
