"""What an item's image is, per modality: RGB H&E patches (JPEG, decoded on CPU into the batch buffer or left
as bytes for one batched GPU decode) or multiplex patches (lossless, normalised per marker)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.errors import IntegrityError
from hestdata.loader.decode import check_jpeg_shape, decode_cpu, looks_like_jpeg


def choose_markers(panels: list[list[str]], markers: Any) -> list[str]:
    """Canonical marker names wanted: the user's (resolved), else the common panel, else the union."""
    from hestdata.curation.markers import resolve

    if markers is not None:
        return [resolve(mk).name for mk in markers]
    if all(p == panels[0] for p in panels):
        return panels[0]
    return list(dict.fromkeys(m for p in panels for m in p))


def _each_patch(ds: Any, locs: list[tuple[int, int]], handle: Any) -> tuple[np.ndarray, int]:
    """Read every item's encoded patch and call ``handle(s_no, sample, k, data, where)`` on it; returns which
    items succeeded and how many were lost. An ``IntegrityError`` from ``handle`` is raised or, under
    ``on_error="skip"``, counted with the unreadable shards' patches."""
    ok = np.zeros(len(locs), dtype=bool)
    n_skipped = 0
    for s_no, ks, pidx, raw, lost in ds.read_by_sample(locs):
        s = ds.samples[s_no]
        n_skipped += lost
        for k, i, data in zip(ks, pidx, raw, strict=True):
            if data is None:
                continue
            try:
                handle(s_no, s, k, data, f"{s.path}: sample {s.sample_id} patch {int(i)} ({ds.patch})")
            except IntegrityError:
                if ds.on_error == "raise":
                    raise
                n_skipped += 1
                continue
            ok[k] = True
    return ok, n_skipped


def _decode_rgb(ds: Any, locs: list[tuple[int, int]], buf: np.ndarray | None, jpegs: list[Any]) -> tuple[np.ndarray, int]:
    """Decode (or check and keep as bytes) every item's JPEG."""

    def one(_s_no: int, s: Any, k: int, data: bytes, where: str) -> None:
        if buf is not None:
            decode_cpu(data, where, out=buf[k])
        elif not looks_like_jpeg(data):
            raise IntegrityError(f"{where}: corrupt JPEG (bad markers)")
        else:
            check_jpeg_shape(data, s.reader.info.patch_shape[:2], where)
            jpegs[k] = np.frombuffer(data, dtype=np.uint8)

    return _each_patch(ds, locs, one)


def _pairs(ds: Any, locs: list[tuple[int, int]], keep: np.ndarray) -> dict[str, Any]:
    """Expression targets, masks, centres and ids of the kept items."""
    g = len(ds.genes)
    expr = np.zeros((len(keep), g), dtype=np.float32)
    mask = np.zeros((len(keep), g), dtype=bool)
    coords = np.zeros((len(keep), 2), dtype=np.float32)
    lab = np.full(len(keep), -1, dtype=np.int64) if ds.label_column is not None else None
    by_sample: dict[int, list[int]] = {}
    for j, k in enumerate(keep):
        by_sample.setdefault(locs[k][0], []).append(j)
    for s_no, js in by_sample.items():
        s = ds.samples[s_no]
        pidx = np.array([locs[keep[j]][1] for j in js], dtype=np.int64)
        e, m = s.targets.rows(s.obs_index[pidx], ds.targets)
        if s.check_unchanged():  # overwritten while reading: the rows again, from the version the patches came from
            e, m = s.targets.rows(s.obs_index[pidx], ds.targets)
        expr[js], mask[js], coords[js] = e, m, s.centers_um[pidx]
        if lab is not None and s.label_codes is not None:
            lab[js] = s.label_codes[s.obs_index[pidx]]
    sample_ids = [ds.samples[locs[k][0]].sample_id for k in keep]
    obs_ids = [str(ds.samples[locs[k][0]].obs_names[ds.samples[locs[k][0]].obs_index[locs[k][1]]]) for k in keep]
    out = {"expression": expr, "mask": mask, "sample_id": sample_ids, "obs_id": obs_ids, "coords_um": coords}
    if lab is not None:
        out["label"] = lab
    return out


def load_rgb(ds: Any, ids: np.ndarray, locs: list[tuple[int, int]], decode: str) -> dict[str, Any]:
    """One batch of H&E pairs. CPU decoding writes straight into the batch array; the image tensor is
    (B, 3, H, W) in channels-last memory (a permuted view, no transposing copy)."""
    import torch

    n = len(ids)
    jpegs: list[Any] = [None] * n
    buf = image_t = None
    if decode == "cpu":
        h, w, _ = ds.samples[locs[0][0]].reader.info.patch_shape if n else (1, 1, 3)
        image_t = ds.worker_buffer(n, (h, w, 3)) if torch.utils.data.get_worker_info() is not None else None
        if image_t is None:
            image_t = torch.empty((n, h, w, 3), dtype=torch.uint8)
        buf = image_t.numpy()
    ok, n_skipped = _decode_rgb(ds, locs, buf, jpegs)
    keep = np.flatnonzero(ok)
    batch = {**_pairs(ds, locs, keep), "index": np.asarray(ids, dtype=np.int64)[keep], "n_skipped": n_skipped}
    if image_t is not None:
        t = (image_t if len(keep) == n else image_t[torch.from_numpy(keep)]).permute(0, 3, 1, 2)
        batch["_ring"] = image_t.is_shared()
        batch["image"] = ds.transform(t) if ds.transform is not None else t
    else:
        batch["jpeg"] = [torch.from_numpy(jpegs[k].copy()) for k in keep]
    return batch


def _normalise(ds: Any, s_no: int, patch: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    stats = ds.marker_stats[s_no]
    order = list(stats)  # channel order of this sample
    for j, name in enumerate(ds.markers):
        st = stats.get(name)
        if st is None:
            continue
        ch = patch[order.index(name)].astype(np.float32) / st["scale"]
        out[j] = (ch - st["mean"]) / (st["std"] if st["std"] > 0 else 1.0)
        mask[j] = True


def marker_ids(ds: Any) -> np.ndarray:
    """The stable integer id of each wanted marker (the samples' own ids win over the vocabulary's)."""
    from hestdata.curation.markers import vocabulary

    vocab = {name: mk.marker_id for name, mk in vocabulary()[0].items()}
    for st in ds.marker_stats:
        vocab.update({name: v["marker_id"] for name, v in st.items()})
    return np.array([vocab.get(x, 0) for x in ds.markers])


def load_multiplex(ds: Any, ids: np.ndarray, locs: list[tuple[int, int]]) -> dict[str, Any]:
    """Lossless multiplex patches → float32 (B, M, H, W) over ``ds.markers``, normalised per marker."""
    import torch

    n, m = len(ids), len(ds.markers)
    shape = ds.samples[locs[0][0]].reader.info.patch_shape if n else (m, 1, 1)
    out = np.zeros((n, m, shape[1], shape[2]), dtype=np.float32)
    mask = np.zeros((n, m), dtype=bool)

    def one(s_no: int, s: Any, k: int, data: bytes, where: str) -> None:
        try:
            patch = s.reader.info.decode(data)
        except Exception as exc:
            raise IntegrityError(f"{where}: corrupt chunk ({exc})") from exc
        _normalise(ds, s_no, patch, out[k], mask[k])

    ok, n_skipped = _each_patch(ds, locs, one)
    keep = np.flatnonzero(ok)
    t = torch.from_numpy(out[keep])
    return {"image": ds.transform(t) if ds.transform is not None else t,
            "marker_mask": mask[keep], "marker_ids": marker_ids(ds),
            "expression": np.zeros((len(keep), 0), np.float32), "mask": np.zeros((len(keep), 0), bool),
            "sample_id": [ds.samples[locs[k][0]].sample_id for k in keep],
            "obs_id": [f"tile{locs[k][1]}" for k in keep],
            "coords_um": np.stack([ds.samples[locs[k][0]].centers_um[locs[k][1]] for k in keep])
            if len(keep) else np.zeros((0, 2), np.float32),
            "index": np.asarray(ids, dtype=np.int64)[keep], "n_skipped": n_skipped}
