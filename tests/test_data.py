"""Data sets: IDX reading, normalization and augmentation, batch order and sharding, ImageFolder with bad files."""
import gzip
import struct

import numpy as np
import pytest
import torch

from repvgg_deploy.data import (DatasetInfo, EpochSampler, FolderBatchLoader, InMemoryDataset, SkippedSample,
                                TensorBatchLoader, batch_transform, build_dataset, build_loader, dataset_info, read_idx)
from repvgg_deploy.data.memory import random_erasing
from repvgg_deploy.data import sources
from repvgg_deploy.errors import DataError

from conftest import FASHION_DIR, has_fashion

needs_fashion = pytest.mark.skipif(not has_fashion, reason=f"Fashion-MNIST not installed at {FASHION_DIR} "
                                                          "(apt-get install dataset-fashion-mnist)")


def _write_idx(path, array, gz):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


# ------------------------------------------------------------------ IDX / Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip_and_bad_files(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("x.idx" + (".gz" if gz else ""))
    _write_idx(p, a, gz)
    assert np.array_equal(read_idx(p), a)
    b = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "i.idx", b, False)
    assert read_idx(tmp_path / "i.idx").tolist() == [1, -2, 70000]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(open(p, "rb").read()[:10] if not gz else gzip.open(p).read()[:20])
    with pytest.raises(DataError):
        read_idx(tmp_path / "short")


@needs_fashion
def test_fashion_mnist_idx_shapes_labels_and_pixel_statistics():
    x, y = sources.load_fashion_mnist("train")
    xt, yt = sources.load_fashion_mnist("val")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and y.shape == (60000,)
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert sources.FASHION_MNIST_SIZES == {"train": len(x), "val": len(xt)}
    assert y.min() == 0 and y.max() == 9 and np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10
    # the published normalization constants of Fashion-MNIST are these statistics
    xf = x.astype(np.float64) / 255
    assert abs(xf.mean() - 0.2860) < 5e-4 and abs(xf.std() - 0.3530) < 5e-4
    assert y[:5].tolist() == [9, 0, 0, 3, 0]  # the first training labels of the official files


def test_missing_fashion_mnist_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_DIRS", [tmp_path / "nowhere"])
    with pytest.raises(DataError) as e:
        build_dataset("fashion-mnist", "val", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg and "--download" in msg


@needs_fashion
def test_fashion_mnist_found_through_data_dir(tmp_path, monkeypatch):
    for f in FASHION_DIR.iterdir():
        (tmp_path / f.name).symlink_to(f)
    monkeypatch.setattr(sources, "FASHION_MNIST_DIRS", [])
    assert sources.find_fashion_mnist(tmp_path) == tmp_path
    assert len(build_dataset("fashion-mnist", "val", data_dir=tmp_path, subset=7)) == 7


# ------------------------------------------------------------------ info and transforms


def test_dataset_info():
    info = dataset_info("fashion-mnist")
    assert isinstance(info, DatasetInfo)
    assert (info.name, info.num_classes, info.img_size, info.in_chans) == ("fashion-mnist", 10, 32, 1)
    assert info.mean == (0.2860,) and info.std == (0.3530,) and info.class_names[9] == "Ankle boot"
    info3 = dataset_info("Fashion-MNIST", in_chans=3)
    assert info3.mean == (0.2860,) * 3 and info3.std == (0.3530,) * 3
    c = dataset_info("cifar10")
    assert c.in_chans == 3 and len(c.mean) == 3 and c.class_names[0] == "airplane"
    assert dataset_info("fake").num_classes == 10


@needs_fashion
def test_fashion_mnist_items_are_padded_normalized_tensors():
    ds = build_dataset("fashion-mnist", "val")
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and isinstance(y, int) and y == 9
    raw = torch.from_numpy(sources.load_fashion_mnist("val")[0][0].copy()).float() / 255
    assert torch.allclose(x[0, 2:30, 2:30], (raw - 0.2860) / 0.3530, atol=1e-6)
    zero = (0 - 0.2860) / 0.3530
    assert torch.allclose(x[0, :2], torch.full((2, 32), zero)) and torch.allclose(x[0, :, 30:], torch.full((32, 2), zero))
    x3, _ = build_dataset("fashion-mnist", "val", in_chans=3, img_size=64)[0]
    assert x3.shape == (3, 64, 64) and torch.equal(x3[0], x3[1]) and torch.equal(x3[1], x3[2])
    # over the padded 32x32 training images the normalized pixels are close to zero-mean, unit-std
    tr = build_dataset("fashion-mnist", "train", subset=5000)
    xb = tr.transform(tr.images)
    assert abs(xb[:, :, 2:30, 2:30].mean().item()) < 0.02 and abs(xb[:, :, 2:30, 2:30].std().item() - 1) < 0.02


def test_augmentation_is_a_padded_crop_and_flip_of_the_image():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(1, 256, (64, 1, 32, 32), dtype=torch.uint8)  # no zeros: padding is recognisable
    plain = batch_transform(imgs, 32, [0.0], [1 / 255], 1)
    assert torch.equal(plain, imgs.float())
    aug = batch_transform(imgs, 32, [0.0], [1 / 255], 1, augment=True, generator=g)
    assert aug.shape == plain.shape
    padded = torch.nn.functional.pad(imgs.float(), (4, 4, 4, 4))
    shifts, flips = set(), 0
    for i in range(64):
        found = None
        for dy in range(9):
            for dx in range(9):
                crop = padded[i, :, dy:dy + 32, dx:dx + 32]
                if torch.equal(aug[i], crop):
                    found = (dy, dx, False)
                elif torch.equal(aug[i], crop.flip(-1)):
                    found = (dy, dx, True)
        assert found is not None, f"augmented image {i} is not a crop of its padded original"
        shifts.add(found[:2])
        flips += found[2]
    assert len(shifts) > 10 and 10 < flips < 54
    again = batch_transform(imgs, 32, [0.0], [1 / 255], 1, augment=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(aug, again)


def test_random_erasing_blanks_one_rectangle_per_chosen_sample():
    x = torch.rand(2000, 3, 32, 32) + 1.0  # nothing is 0 before erasing
    out = random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    erased = out == 0
    assert torch.equal(erased[:, :1].expand_as(erased), erased)  # the same rectangle in every channel
    assert torch.equal(out[~erased], x[~erased])  # the rest untouched
    hit = erased[:, 0].flatten(1).any(1)
    assert 0.45 < hit.float().mean().item() < 0.55
    areas = []
    for m in erased[hit, 0]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert m.sum() == h * w and m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a full rectangle
        areas.append((h * w).item() / 1024)  # 2-33 %, give or take the rounding of each side
    assert min(areas) >= 0.01 and max(areas) <= 0.37 and 0.12 < sum(areas) / len(areas) < 0.2
    assert torch.equal(random_erasing(x, 0.0, torch.Generator()), x)
    again = random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_reprob_reaches_the_training_batches_only():
    imgs = torch.randint(1, 256, (256, 1, 28, 28), dtype=torch.uint8)
    train = InMemoryDataset(imgs, torch.zeros(256), 32, [0.0], [1 / 255], 1, augment=True, reprob=1.0)
    x, _ = next(iter(build_loader(train, 256, train=True, seed=0)))
    assert (x == 0).flatten(1).sum(1).gt(16).all()  # more than the crop's zero padding: every image erased
    plain = InMemoryDataset(imgs, torch.zeros(256), 32, [0.0], [1 / 255], 1, augment=True)
    x0, _ = next(iter(build_loader(plain, 256, train=True, seed=0)))
    assert (x0 == 0).flatten(1).sum(1).le((32 * 32 - 28 * 28) + 8 * 32 * 2).all()
    val = InMemoryDataset(imgs, torch.zeros(256), 32, [0.0], [1 / 255], 1, augment=False, reprob=1.0)
    assert torch.equal(val.transform(imgs), batch_transform(imgs, 32, [0.0], [1 / 255], 1))
    with pytest.raises(ValueError, match="reprob"):
        InMemoryDataset(imgs, torch.zeros(256), 32, [0.0], [1 / 255], 1, reprob=1.5)


# ------------------------------------------------------------------ batch order


def _mem_ds(n=103):
    imgs = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
    return InMemoryDataset(imgs, torch.arange(n), img_size=8, mean=[0.0], std=[1 / 255], in_chans=1, augment=False)


def test_tensor_loader_epochs_shuffle_and_resume_exactly():
    ds = _mem_ds()
    loader = TensorBatchLoader(ds, 10, shuffle=True, drop_last=True, seed=1)
    assert len(loader) == 10
    loader.set_epoch(0)
    e0 = [y for _, y in loader]
    seen = torch.cat(e0)
    assert len(seen) == 100 and len(set(seen.tolist())) == 100
    assert all(torch.equal(x[:, 0, 0, 0].long(), y) for x, y in loader)  # images travel with their labels
    loader.set_epoch(1)
    e1 = [y for _, y in loader]
    assert not torch.equal(torch.cat(e0), torch.cat(e1))
    loader.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(e0[4:], [y for _, y in loader.iter_from(4)]))
    aug = build_loader(InMemoryDataset(ds.images, ds.labels, 8, [0.0], [1.0], 1, augment=True), 10, train=True, seed=1)
    full = [x for x, _ in aug.iter_from(0)]
    tail = [x for x, _ in aug.iter_from(7)]
    assert all(torch.equal(a, b) for a, b in zip(full[7:], tail))


def test_sharding_across_ranks():
    ds = _mem_ds()
    single = TensorBatchLoader(ds, 8, shuffle=True, drop_last=True, seed=5)
    ranks = [TensorBatchLoader(ds, 4, shuffle=True, drop_last=True, seed=5, rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 12
    for (_, y), (_, y0), (_, y1) in zip(single, ranks[0], ranks[1]):
        assert torch.equal(y, torch.cat([y0, y1]))  # the same global batches, whatever the world size
    evals = [TensorBatchLoader(ds, 16, rank=r, world_size=2) for r in range(2)]
    ys = torch.cat([y for ev in evals for _, y in ev])
    assert sorted(ys.tolist()) == list(range(103))
    s = EpochSampler(103, shuffle=True, seed=5, rank=1, world_size=2, drop_last=True, batch_size=4)
    assert list(s) == torch.cat([y for _, y in ranks[1]]).tolist()


def test_fake_data_and_unknown_names(tmp_path):
    ds = build_dataset("fake", "train", subset=6, img_size=32)
    assert len(ds) == 6 and ds[0][0].shape == (3, 32, 32)
    for bad in ("imagenet-21k", "cifar100", str(tmp_path / "missing")):
        with pytest.raises(DataError, match="unknown data set"):
            dataset_info(bad)
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no train/ folder"):
        build_dataset(str(tmp_path), "train")
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        build_dataset("cifar10", "val", data_dir=tmp_path)


# ------------------------------------------------------------------ ImageFolder


def make_image_folder(root, classes=("cat", "dog"), per_class=4, size=40, corrupt=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    if corrupt:
        (root / "train" / classes[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return root


def test_image_folder_transforms_and_corrupt_file_skipped(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    info = dataset_info(str(root))
    assert info.kind == "folder" and info.class_names == ("cat", "dog") and info.img_size == 224
    val = build_dataset(str(root), "val", img_size=32)
    x, y = val[0]
    assert x.shape == (3, 32, 32) and y == 0
    train = build_dataset(str(root), "train", img_size=32, augment=True)
    assert len(train) == 9
    bad = [i for i, (p, _) in enumerate(train.samples) if p.endswith("broken.png")][0]
    with pytest.warns(RuntimeWarning, match="skipping unreadable image .*broken.png"):
        item = train[bad]
    assert isinstance(item, SkippedSample) and item.path.endswith("broken.png")
    loader = build_loader(train, 4, train=False, workers=0)
    assert isinstance(loader, FolderBatchLoader)
    n = sum(len(y) for _, y in loader)  # (warned once per file and process: above)
    assert n == 8 and loader.skipped == 1 and loader.skipped_paths[0].endswith("broken.png")
    grey = build_dataset(str(root), "val", img_size=32, in_chans=1)[0][0]
    assert grey.shape == (1, 32, 32)


def test_image_folder_bad_layouts(tmp_path):
    root = make_image_folder(tmp_path / "imgs", corrupt=False)
    (root / "val" / "cat").rename(root / "val" / "lion")
    with pytest.raises(DataError, match="differ from the training set"):
        build_dataset(str(root), "val")
    import shutil

    shutil.rmtree(root / "val")
    with pytest.raises(DataError, match="no val/ folder"):
        build_dataset(str(root), "val")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class sub-folders"):
        dataset_info(str(empty))
