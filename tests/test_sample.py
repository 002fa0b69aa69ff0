"""The synthetic sample: MLL23's raw layout exactly, deterministic, planted duplicates as declared,
atomic writes, and classes a simple classifier can tell apart from the pixels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hema.base.errors import HemaError
from hema.base.imaging import decode_rgb, pixel_sha256
from hema.dataset.sources.mll23 import CELL_CLASSES
from hema.synthetic import MARKER, PAINTED_CLASSES, SampleManifest, draw_sample, ensure_sample, read_manifest
from hema.synthetic import painter
from hema.synthetic.painter import default_sample_dir

PER_CLASS = 24  # 432 images: 16 per class to fit a classifier on, 8 to test it


def sample_image_ids(manifest: SampleManifest) -> list[str]:
    return [painter.image_id(c, i) for c in PAINTED_CLASSES for i in range(manifest.per_class)]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    root = tmp_path_factory.mktemp("sample") / "mll23"
    return root, draw_sample(root, per_class=PER_CLASS, seed=0)


def _rgb(path: Path) -> np.ndarray:
    return decode_rgb(path.read_bytes()).rgb


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- layout


def test_layout_is_mll23_raw(drawn: tuple[Path, SampleManifest]) -> None:
    root, manifest = drawn
    assert sorted(p.name for p in root.iterdir()) == sorted([*CELL_CLASSES, MARKER])
    for cls in CELL_CLASSES:
        names = sorted(p.name for p in (root / cls).iterdir())
        assert names == [f"{cls}_{i:04d}.TIF" for i in range(1, PER_CLASS + 1)]
    ids = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.TIF"))
    assert ids == sorted(sample_image_ids(manifest))
    formats = set()
    for image_id in ids:
        with Image.open(root / image_id) as im:
            assert (im.size, im.mode) == ((288, 288), "RGB"), image_id
            formats.add(im.format)
    assert formats == {"TIFF", "PNG"}  # PNG: the one planted PNG-in-.TIF exact copy
    assert len(list(root.parent.iterdir())) == 1  # no temporary folder left beside it


def test_marker_declares_synthetic_data(drawn: tuple[Path, SampleManifest]) -> None:
    root, manifest = drawn
    assert read_manifest(root) == manifest
    assert SampleManifest.from_json(manifest.to_json()) == manifest
    raw = (root / MARKER).read_text()
    assert '"synthetic": true' in raw and '"generator": "hema.sample"' in raw
    assert (manifest.synthetic, manifest.version, manifest.per_class, manifest.seed) == (
        True,
        1,
        PER_CLASS,
        0,
    )


def test_read_manifest_of_real_data_and_of_a_broken_marker(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(HemaError, match="not a valid hema sample marker"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_cells(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    draw_sample(a, per_class=3, seed=5)
    draw_sample(b, per_class=3, seed=5)
    draw_sample(c, per_class=3, seed=6)
    assert _tree(a) == _tree(b)
    other = _tree(c)
    same = [k for k, v in _tree(a).items() if k.endswith(".TIF") and other[k] == v]
    assert not same


# ---------------------------------------------------------------------------------------------- duplicates


def test_planted_duplicates_as_declared(drawn: tuple[Path, SampleManifest]) -> None:
    root, manifest = drawn
    exact = [p for p in manifest.planted if p.kind == "exact"]
    near = [p for p in manifest.planted if p.kind == "near"]
    assert sorted(p.transform for p in exact) == ["copy", "copy", "png_in_tif", "tiff_lzw"]
    assert sorted(re.match(r"[a-z]+", p.transform)[0] for p in near) == sorted(painter._NEAR_TRANSFORMS)
    for p in exact:
        assert pixel_sha256(_rgb(root / p.a)) == pixel_sha256(_rgb(root / p.b)), p
    for p in exact:  # "copy": the same file twice; the others: the same pixels, other bytes
        assert ((root / p.a).read_bytes() == (root / p.b).read_bytes()) == (p.transform == "copy"), p
    for p in near:
        assert pixel_sha256(_rgb(root / p.a)) != pixel_sha256(_rgb(root / p.b)), p
    copies = [p.b for p in manifest.planted]
    assert len(set(copies)) == len(copies) and not set(copies) & {p.a for p in manifest.planted}
    folders = [p.a.split("/")[0] for p in manifest.planted]
    assert folders.count("lymphocyte_reactive") <= 1


def test_near_duplicates_are_the_transform_they_declare(drawn: tuple[Path, SampleManifest]) -> None:
    root, manifest = drawn
    unrelated = np.abs(
        _rgb(root / sample_image_ids(manifest)[0]).astype(int) - _rgb(root / sample_image_ids(manifest)[1])
    ).mean()
    for p in (p for p in manifest.planted if p.kind == "near"):
        a, b = _rgb(root / p.a), _rgb(root / p.b)
        kind, *args = p.transform.split()
        if kind == "rotate":
            assert np.array_equal(np.rot90(a, int(args[0]) // 90), b)
        elif kind == "mirror":
            assert np.array_equal(np.flip(a, axis=0 if args[0] == "vertical" else 1), b)
        elif kind == "shift":
            dy, dx = (int(s.split("=")[1]) for s in args)
            assert 0 < max(abs(dy), abs(dx)) <= 0.1 * 288
            h, w = 288 - abs(dy), 288 - abs(dx)
            assert np.array_equal(
                a[max(dy, 0) : max(dy, 0) + h, max(dx, 0) : max(dx, 0) + w],
                b[max(-dy, 0) : max(-dy, 0) + h, max(-dx, 0) : max(-dx, 0) + w],
            )
        else:  # jpeg, relight, rescale: the same picture, pixels moved a little
            diff = np.abs(a.astype(int) - b).mean()
            assert 0 < diff < unrelated / 2, (p, diff, unrelated)


def test_exactly_one_cross_class_duplicate(drawn: tuple[Path, SampleManifest]) -> None:
    root, manifest = drawn
    cross = [p for p in manifest.planted if p.cross_class]
    assert len(cross) == 1
    assert cross[0].kind == "exact" and (root / cross[0].a).read_bytes() == (root / cross[0].b).read_bytes()
    by_sha: dict[str, set[str]] = {}
    for image_id in sample_image_ids(manifest):
        by_sha.setdefault(pixel_sha256(_rgb(root / image_id)), set()).add(image_id.split("/")[0])
    assert sum(len(classes) > 1 for classes in by_sha.values()) == 1  # nothing else conflicts by accident


# ---------------------------------------------------------------------------------------------- writing


def test_refuses_a_non_empty_folder_and_overwrites_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(HemaError, match="not empty"):
        draw_sample(out, per_class=2)
    with pytest.raises(HemaError, match="holds no sample drawn by hema"):  # overwrite replaces only a sample
        draw_sample(out, per_class=2, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    draw_sample(out, per_class=3)
    draw_sample(out, per_class=2, overwrite=True)
    assert read_manifest(out).per_class == 2 and len(list(out.glob("*/*.TIF"))) == 2 * 18
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    empty = tmp_path / "empty"
    empty.mkdir()
    draw_sample(empty, per_class=2)  # an existing empty folder is fine
    with pytest.raises(HemaError, match="at least 2"):
        draw_sample(tmp_path / "tiny", per_class=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(HemaError, match="not a folder"):
        draw_sample(tmp_path / "file", per_class=2)


def test_ensure_sample_draws_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEMA_CACHE", str(tmp_path / "cache"))
    path = default_sample_dir(per_class=2, seed=3)
    path.mkdir(parents=True)
    (path / "half-written.TIF").write_bytes(b"")  # a broken cache without a marker is replaced
    assert ensure_sample(per_class=2, seed=3) == path
    assert not (path / "half-written.TIF").exists()
    assert path.is_relative_to(tmp_path / "cache") and "n2" in path.name and "s3" in path.name
    assert read_manifest(path).seed == 3

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("drew again")

    monkeypatch.setattr(painter, "_write_sample", fail)  # where every drawing paints
    assert ensure_sample(per_class=2, seed=3) == path


# ---------------------------------------------------------------------------------------------- learnability


def _features(rgb: np.ndarray) -> np.ndarray:
    """Colour and shape summaries of the centre (every other pixel): radial stain profile, colour
    histogram, dark (nuclear) area and its edge strength."""
    od = -np.log((rgb[44:244:2, 44:244:2].astype(np.float32) + 1) / 256)
    yy, xx = np.mgrid[0:100, 0:100]
    ring = np.minimum((np.hypot(yy - 50, xx - 50) / 6).astype(int), 8).ravel()
    radial = [np.bincount(ring, od[..., k].ravel(), 9) / np.bincount(ring, minlength=9) for k in range(3)]
    q = np.clip((od / 0.5).astype(int), 0, 5)
    hist = np.bincount((q[..., 0] * 36 + q[..., 1] * 6 + q[..., 2]).ravel(), minlength=216) / od[..., 0].size
    dark = od.sum(-1) > 2.0
    edges = np.hypot(*np.gradient(od.sum(-1)))
    return np.concatenate([*radial, np.sqrt(hist), [dark.mean(), edges[dark].mean() if dark.any() else 0.0]])


def test_classes_are_learnable_from_pixels(drawn: tuple[Path, SampleManifest]) -> None:
    """A ridge classifier on simple features, fit on 16 images per class, far above chance on the rest."""
    root, manifest = drawn
    copies = {p.b for p in manifest.planted}  # keep duplicates from leaking into the held-out images
    rows = [
        (_features(_rgb(root / image_id)), CELL_CLASSES.index(image_id.split("/")[0]), i)
        for image_id in sample_image_ids(manifest)
        if image_id not in copies
        for i in [int(image_id[-8:-4]) - 1]
    ]
    x = np.stack([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    train = np.array([r[2] < 16 for r in rows])
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.linalg.solve(z[train].T @ z[train] + 10 * np.eye(z.shape[1]), z[train].T @ np.eye(18)[y[train]])
    accuracy = float(((z[~train] @ w).argmax(1) == y[~train]).mean())
    print(f"held-out accuracy {accuracy:.3f} on {int((~train).sum())} images (chance {1 / 18:.3f})")
    assert accuracy > 0.5
