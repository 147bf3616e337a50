"""PatchDataset and make_loader: exactly-once partitioning, determinism, resumption, decoding, genes, errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import hestdata
from hestdata.loader.dataset import as_tensors
from tests.synth import synthetic_sample


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three samples (23, 17, 30 patches, shards of 8) with partly different gene panels."""
    r = tmp_path_factory.mktemp("loader") / "root"
    panels = [("TP53", "MKI67", "EGFR"), ("TP53", "MKI67", "KRT5"), ("TP53", "EGFR", "KRT5", "CD3E")]
    for i, (n, genes) in enumerate(zip((23, 17, 30), panels, strict=True)):
        s = synthetic_sample(f"s{i}", n=n, seed=i, genes=genes)
        hestdata.convert(s, r, patches=["32px_2um"], min_tissue_fraction=0, shard_patches=8,
                         metadata={"organ": "skin" if i < 2 else "lung", "patient": f"p{i}"})
    return r


def _ids(loader) -> list[int]:
    return [int(i) for b in loader for i in b["index"]]


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (1, 2), (3, 0), (2, 2)])
def test_every_item_exactly_once_across_ranks_and_workers(root, world_size, num_workers):
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu")
    assert len(ds) == 70
    seen: list[int] = []
    for rank in range(world_size):
        dl = hestdata.make_loader(ds, batch_size=4, num_workers=num_workers, seed=7, rank=rank,
                                  world_size=world_size)
        ids = _ids(dl)
        assert len(ids) == sum(len(b) for b in dl._blocks(0))
        seen += ids
    assert sorted(seen) == list(range(70))


def test_epoch_order_is_shard_aware():
    from hestdata.loader.sampler import ShardSpan, epoch_order

    spans = [ShardSpan(8 * i, 8) for i in range(10)]
    order = epoch_order(spans, seed=1, epoch=0, shuffle=True, window_shards=4)
    assert sorted(order) == list(range(80))
    for w in range(0, 64, 32):  # each window of 32 items comes from exactly 4 shards
        assert len({int(i) // 8 for i in order[w:w + 32]}) == 4
    assert len({int(i) // 8 for i in order[64:]}) == 2
    assert not np.array_equal(order, epoch_order(spans, seed=1, epoch=1, shuffle=True))


def test_drop_last_gives_equal_ranks(root):
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu")
    lens = [len(hestdata.make_loader(ds, batch_size=4, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    assert len(set(lens)) == 1 and lens[0] == 70 // 4 // 3


def test_order_deterministic_per_seed_and_epoch_and_shard_aware(root):
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="none")
    a = hestdata.make_loader(ds, batch_size=5, num_workers=2, seed=3)
    b = hestdata.make_loader(ds, batch_size=5, num_workers=0, seed=3)
    e0a, e0b = _ids(a), _ids(b)
    assert e0a == e0b  # same (seed, epoch): same order, whatever the number of workers
    e1 = _ids(a)  # the loader advanced to epoch 1
    assert a.epoch == 2 and sorted(e1) == sorted(e0a) and e1 != e0a
    c = hestdata.make_loader(ds, batch_size=5, seed=4)
    assert _ids(c) != e0a
    plain = hestdata.make_loader(ds, batch_size=5, shuffle=False)
    assert _ids(plain) == list(range(70))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_rest(root, num_workers):
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu")
    ref = hestdata.make_loader(ds, batch_size=4, num_workers=num_workers, seed=11, rank=1, world_size=2)
    full = _ids(ref)
    dl = hestdata.make_loader(ds, batch_size=4, num_workers=num_workers, seed=11, rank=1, world_size=2)
    it = iter(dl)
    head = [int(i) for b in itertools.islice(it, 3) for i in b["index"]]
    state = dl.state_dict()
    del it
    fresh = hestdata.make_loader(ds, batch_size=4, num_workers=num_workers, seed=11, rank=1, world_size=2)
    fresh.load_state_dict(state)
    rest = _ids(fresh)
    assert head + rest == full
    assert state["consumed"] == 3
    with pytest.raises(ValueError, match="cannot resume"):
        hestdata.make_loader(ds, batch_size=8, seed=11).load_state_dict(state)


def test_decoded_images_equal_zarr_python(root):
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu")
    batch = next(iter(hestdata.make_loader(ds, batch_size=16, seed=0)))
    for img, idx in zip(batch["image"], batch["index"], strict=True):
        s, i = ds.locate(int(idx))
        z = zarr.open_array(str(root / "samples" / f"s{s}.zarr" / "hestdata/patches/32px_2um/images"), mode="r")
        assert torch.equal(img, torch.from_numpy(z[i]).permute(2, 0, 1))
    assert batch["image"].shape == (16, 3, 32, 32) and batch["image"].dtype == torch.uint8
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["sample_id"] == "s0" and item["obs_id"] == "s5"


def test_expression_targets_and_gene_union_with_mask(root):
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="none", targets="raw")
    assert ds.genes == ["TP53", "MKI67", "EGFR", "KRT5", "CD3E"]
    batch = as_tensors(ds.load_block(np.arange(70)))
    mask = batch["mask"]
    s1 = [k for k, s in enumerate(batch["sample_id"]) if s == "s1"]
    assert mask[s1].tolist()[0] == [True, True, False, True, False]
    assert (batch["expression"][s1][:, [2, 4]] == 0).all()
    # values equal the stored counts of the right table rows
    import anndata as ad

    tab = ad.read_zarr(root / "samples" / "s1.zarr" / "tables" / "expression")
    k = s1[0]
    row = list(tab.obs_names).index(batch["obs_id"][k])
    assert batch["expression"][k, 0] == tab[row, "TP53"].X.toarray()[0, 0]
    log = as_tensors(hestdata.PatchDataset(root, patch="32px_2um", decode="none").load_block(np.arange(70)))
    assert torch.allclose(log["expression"], torch.log1p(batch["expression"]))
    inter = hestdata.PatchDataset(root, patch="32px_2um", decode="none", genes="intersection")
    assert inter.genes == ["TP53"]
    explicit = hestdata.PatchDataset(root, patch="32px_2um", decode="none", genes=["CD3E", "NOPE"])
    b = as_tensors(explicit.load_block(np.arange(70)))
    assert b["mask"][:, 1].sum() == 0 and b["mask"][:, 0].sum() == 30


def test_catalog_query_selects_samples(root):
    import polars as pl

    ds = hestdata.PatchDataset(root, query=pl.col("organ") == "skin", patch="32px_2um", decode="none")
    assert [s.sample_id for s in ds.samples] == ["s0", "s1"] and len(ds) == 40
    one = hestdata.PatchDataset(root / "samples" / "s2.zarr", patch="32px_2um", decode="none")
    assert len(one) == 30 and one.genes == ["TP53", "EGFR", "KRT5", "CD3E"]
    with pytest.raises(hestdata.StoreError, match="no sample matches"):
        hestdata.PatchDataset(root, query=pl.col("organ") == "liver", patch="32px_2um")
    with pytest.raises(hestdata.StoreError, match="no patch array"):
        hestdata.PatchDataset(root, patch="224px_0.5um")


def test_corrupt_chunk_raise_and_skip(root, tmp_path):
    import shutil

    r = tmp_path / "root"
    shutil.copytree(root, r)
    ds = hestdata.PatchDataset(r, patch="32px_2um", decode="cpu")
    reader = ds.samples[1].reader
    off, size = (int(v) for v in reader.shard_index(0)[3])
    shard = Path(reader.shard_path(0))
    data = bytearray(shard.read_bytes())
    a, b = off + size // 2, off + size - 2
    data[a:b] = b"\x00" * (b - a)  # destroy the entropy-coded data (same length: other patches untouched)
    data[off + 2:off + 20] = b"\xff" * 18
    shard.write_bytes(bytes(data))
    bad = ds.samples[1].first + 3
    with pytest.raises(hestdata.IntegrityError, match=r"sample s1 patch 3 \(32px_2um\)"):
        _ids(hestdata.make_loader(hestdata.PatchDataset(r, patch="32px_2um", decode="cpu"), batch_size=8))
    skip = hestdata.PatchDataset(r, patch="32px_2um", decode="cpu", on_error="skip")
    dl = hestdata.make_loader(skip, batch_size=8, num_workers=2)
    ids = _ids(dl)
    assert sorted(ids) == [i for i in range(70) if i != bad] and dl.n_skipped == 1
    # a missing shard file: an error naming the sample, or the whole shard skipped and counted
    shard.unlink()
    with pytest.raises(hestdata.StoreError, match="sample s1"):
        hestdata.PatchDataset(r, patch="32px_2um", decode="cpu").load_block(np.array([bad]))
    dl = hestdata.make_loader(hestdata.PatchDataset(r, patch="32px_2um", on_error="skip", decode="cpu"), batch_size=8)
    assert len(_ids(dl)) == 62 and dl.n_skipped == 8


def test_batch_augment_cpu():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    aug = hestdata.BatchAugment(seed=0)
    y = aug(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    same = hestdata.BatchAugment(flip=False, rot90=False, normalize=None)(x)
    assert torch.equal(same, x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_matches_cpu(root):
    cpu = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu")
    gpu = hestdata.PatchDataset(root, patch="32px_2um", decode="gpu")
    a = next(iter(hestdata.make_loader(cpu, batch_size=16, seed=1)))
    b = next(iter(hestdata.make_loader(gpu, batch_size=16, seed=1)))
    assert b["image"].is_cuda and torch.equal(a["index"], b["index"])
    diff = (a["image"].float() - b["image"].cpu().float()).abs().mean()
    assert diff < 2.0  # libjpeg-turbo vs nvJPEG IDCT/upsampling differ by rounding only


def test_stream_from_loopback_s3_without_download(root, s3_server, tmp_path):
    url, opts, log = s3_server
    remote = __import__("tests.conftest", fromlist=["upload"]).upload(root, "hest-loader", "root", opts)
    log.clear()
    ds = hestdata.PatchDataset(remote, patch="32px_2um", decode="cpu", storage_options=opts)
    assert len(ds) == 70
    dl = hestdata.make_loader(ds, batch_size=8, num_workers=2, seed=5)
    ids = _ids(dl)
    assert sorted(ids) == list(range(70))
    local = hestdata.make_loader(hestdata.PatchDataset(root, patch="32px_2um", decode="cpu"), batch_size=8, seed=5)
    assert ids == _ids(local)
    requested = [ln for ln in log.lines if "GET /hest-loader/" in ln]
    assert requested, "the server saw no reads"
    assert not any("/images/he/" in ln for ln in requested)  # the image pyramid was never read
    assert not any("/shapes/" in ln for ln in requested)
    # images equal the local ones
    a = as_tensors(hestdata.PatchDataset(root, patch="32px_2um", decode="cpu").load_block(np.arange(10)))
    b = as_tensors(ds.load_block(np.arange(10)))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["expression"], b["expression"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stock_dataloader_and_distributed_sampler(root, num_workers):
    """torch idioms: map-style items collated by torch's default collate, any sampler (DistributedSampler)."""
    from torch.utils.data import DataLoader, DistributedSampler

    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu")
    n = len(ds)
    seen = []
    for batch in DataLoader(ds, batch_size=8, num_workers=num_workers, shuffle=True,
                            generator=torch.Generator().manual_seed(0)):
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, 32, 32)
        assert batch["expression"].shape == (len(batch["index"]), len(ds.genes))
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(n))  # every item once, in torch's shuffled order
    ranks = [[i for b in DataLoader(ds, batch_size=5, sampler=DistributedSampler(ds, num_replicas=3, rank=r,
                                                                                 shuffle=False))
              for i in b["index"].tolist()] for r in range(3)]
    assert set(itertools.chain(*ranks)) == set(range(n)) and [len(r) for r in ranks] == [-(-n // 3)] * 3
    item = ds[5]
    ref = next(b for b in DataLoader(ds, batch_size=1, sampler=[5]))
    assert torch.equal(ref["image"][0], item["image"]) and torch.equal(ref["expression"][0], item["expression"])
