"""fmnist_lab.data: finding, verifying, reading, resizing and batching the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
from conftest import link_real_files, write_idx
from PIL import Image
from torchvision import transforms

from fmnist_lab import data
from fmnist_lab.errors import FmnistLabError


def test_classes_are_the_ten_fashion_mnist_classes():
    assert [c.id for c in data.CLASSES] == list(range(10))
    assert data.CLASS_NAMES == [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    assert data.CLASSES[9].description == "boots and ankle-height shoes"


def test_real_files_verify_with_their_shapes(real_location):
    shapes = data.verify(real_location)
    assert shapes == {
        "train-images-idx3-ubyte": (60000, 28, 28),
        "train-labels-idx1-ubyte": (60000,),
        "t10k-images-idx3-ubyte": (10000, 28, 28),
        "t10k-labels-idx1-ubyte": (10000,),
    }


@pytest.mark.parametrize("split,count", [("train", 60000), ("test", 10000)])
def test_load_gives_float_images_in_unit_range_and_balanced_labels(split, count):
    images, labels = data.load(split, 28)
    assert images.shape == (count, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (count,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert torch.bincount(labels).tolist() == [count // 10] * 10


def test_16_pixel_images_equal_the_originals_resize_and_to_tensor():
    original = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    raw, _ = data.load("test", 28)
    ours, _ = data.load("test", 16)
    for i in range(0, 10000, 37):  # 271 images spread over the set
        pil = Image.fromarray((raw[i, 0] * 255).round().to(torch.uint8).numpy(), mode="L")
        assert torch.equal(ours[i], original(pil)), f"image {i} differs from Resize((16,16)) + ToTensor()"


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_resized_image_equals_pils_own_per_image_resize(split):
    raw = (data.load(split, 28)[0][:, 0] * 255).round().to(torch.uint8).numpy()
    ours = (data.load(split, 16)[0][:, 0] * 255).round().to(torch.uint8).numpy()
    for i, image in enumerate(raw):
        expected = np.asarray(Image.fromarray(image).resize((16, 16), Image.BILINEAR))
        assert np.array_equal(ours[i], expected), f"{split} image {i} differs from PIL's resize"


def test_load_returns_fresh_tensors_each_call():
    first, _ = data.load("test", 16)
    first.zero_()
    second, _ = data.load("test", 16)
    assert second.max() == 1.0


def test_load_rejects_unknown_split_and_size():
    with pytest.raises(FmnistLabError, match="unknown split 'valid'"):
        data.load("valid")
    with pytest.raises(FmnistLabError, match="28 .* or 16"):
        data.load("train", image_size=20)


def test_search_order_root_then_env_then_cwd_then_course_then_system(isolated, real_location, monkeypatch):
    places = {name: link_real_files(real_location, isolated / name) for name in ("root", "env")}
    link_real_files(real_location, isolated / "cwd" / "data" / "FashionMNIST" / "raw")
    for name in ("course", "system"):
        link_real_files(real_location, isolated / name)
    monkeypatch.setenv("FMNIST_DATA", str(places["env"]))
    assert data.find_data(places["root"]).source.startswith("root argument")
    assert data.find_data().source.startswith("$FMNIST_DATA")
    monkeypatch.delenv("FMNIST_DATA")
    found = data.find_data()
    assert found.source.startswith("./data")
    assert found.path("train", "images").parent.parts[-2:] == ("FashionMNIST", "raw")
    shutil.rmtree(isolated / "cwd" / "data")
    assert data.find_data().source.startswith("$FMNIST_LAB_DATA_DIR")
    shutil.rmtree(isolated / "course")
    assert data.find_data().source.startswith("Debian package dataset-fashion-mnist")


def test_missing_data_names_every_place_searched_and_both_fixes(isolated):
    (isolated / "env").mkdir()
    import os

    os.environ["FMNIST_DATA"] = str(isolated / "env")
    try:
        with pytest.raises(FmnistLabError) as caught:
            data.find_data()
    finally:
        del os.environ["FMNIST_DATA"]
    message = str(caught.value)
    assert "\n" not in message
    for place in (
        "$FMNIST_DATA",
        "./data",
        f"$FMNIST_LAB_DATA_DIR {isolated / 'course'}",
        "Debian package dataset-fashion-mnist",
        "http://127.0.0.1:9/train-images-idx3-ubyte.gz",
    ):
        assert place in message
    assert f"download into {isolated / 'course'}: download failed" in message
    assert "apt-get install dataset-fashion-mnist" in message and "set FMNIST_DATA" in message
    assert list((isolated / "course").iterdir()) == []  # no partial download left behind


def test_incomplete_folder_says_which_files_are_missing(isolated, real_location):
    folder = link_real_files(real_location, isolated / "cwd" / "data")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FmnistLabError, match="incomplete, missing t10k-labels-idx1-ubyte"):
        data.find_data(download=False)


def test_download_from_a_mirror_is_verified_then_renamed(isolated, real_location, mirror, monkeypatch):
    folder, url = mirror
    link_real_files(real_location, folder)
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", f"http://127.0.0.1:9/,{url}")  # the first one fails
    location = data.find_data()
    assert location.source.startswith("downloaded")
    assert sorted(p.name for p in (isolated / "course").iterdir()) == sorted(
        f"{spec.name}.gz" for spec in data.IDX_FILES.values()
    )
    assert data.verify(location)["t10k-labels-idx1-ubyte"] == (10000,)


def test_truncated_download_is_reported_and_never_kept(isolated, real_location, mirror, monkeypatch):
    folder, url = mirror
    link_real_files(real_location, folder)
    labels = folder / "train-labels-idx1-ubyte.gz"
    content = labels.read_bytes()
    labels.unlink()
    labels.write_bytes(content[: len(content) // 2])
    monkeypatch.setenv("FMNIST_LAB_MIRRORS", url)
    with pytest.raises(FmnistLabError) as caught:
        data.find_data()
    assert f"{url}train-labels-idx1-ubyte.gz: not a complete gzip file" in str(caught.value)
    names = [p.name for p in (isolated / "course").iterdir()]
    assert "train-labels-idx1-ubyte.gz" not in names and not [n for n in names if n.endswith(".part")]


def test_corrupt_file_is_named_with_the_checksum_that_did_not_match(isolated, real_location):
    folder = link_real_files(real_location, isolated / "bad")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[100] ^= 1
    target.unlink()
    target.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(FmnistLabError) as caught:
        data.load("test", root=folder)
    assert str(caught.value).startswith(f"{target}: SHA-256 of the decompressed bytes")
    assert "expected 0402a96d92fd" in str(caught.value)


def test_truncated_plain_file_is_named_with_its_size(isolated, real_location):
    folder = isolated / "short"
    folder.mkdir()
    for path in real_location.files.values():
        (folder / path.name).symlink_to(path)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.unlink()
    plain = folder / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(real_location.path("test", "labels").read_bytes())[:5000])
    with pytest.raises(FmnistLabError, match=r"decompressed size is 5,000 bytes, expected 10,008"):
        data.load("test", root=folder)


def test_gunzip_reads_what_gzip_reads_up_to_the_limit_and_refuses_broken_files(tmp_path):
    first, second = bytes(range(256)) * 300, b"second member" * 10
    both = gzip.compress(first) + gzip.compress(second)
    assert data._gunzip(both, -1) == gzip.decompress(both) == first + second
    assert data._gunzip(both, 1000) == first[:1000]  # a gzip bomb stops at the limit
    assert data._gunzip(both, len(first) + 6) == first + second[:6]
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(first)[:-12])
    with pytest.raises(FmnistLabError, match=r"cut.gz: not a complete gzip file \(Compressed file ended"):
        data.read_decompressed(path)
    flipped = bytearray(gzip.compress(first))
    flipped[-6] ^= 1  # the CRC-32 in the trailer
    path.write_bytes(bytes(flipped))
    with pytest.raises(FmnistLabError, match=r"not a complete gzip file \(Error -3 .*incorrect data check"):
        data.read_decompressed(path)


def test_load_count_gives_the_first_images_and_labels():
    images, labels = data.load("test", 16)
    first_images, first_labels = data.load("test", 16, count=5)
    assert torch.equal(first_images, images[:5]) and torch.equal(first_labels, labels[:5])
    with pytest.raises(FmnistLabError, match="count must be at least 1, got 0"):
        data.load("test", 16, count=0)


def test_parse_idx_reads_tiny_files_and_rejects_bad_ones(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "tiny-idx3-ubyte", array)
    assert np.array_equal(data.parse_idx(path.read_bytes()), array)
    with pytest.raises(FmnistLabError, match="bad magic number"):
        data.parse_idx(b"\x00\x00\x0d\x01" + path.read_bytes()[4:])
    with pytest.raises(FmnistLabError, match="promises 40 bytes for shape \\(2, 3, 4\\), file has 30"):
        data.parse_idx(path.read_bytes()[:30])


def test_batches_cover_every_image_once_per_epoch_and_reshuffle():
    images = torch.arange(250, dtype=torch.float32).reshape(250, 1, 1, 1)
    labels = torch.arange(250)
    batches = data.InMemoryBatches(images, labels, batch_size=100, seed=3)
    assert len(batches) == 3
    epoch1 = [y for _, y in batches]
    epoch2 = [y for _, y in batches]
    assert [len(y) for y in epoch1] == [100, 100, 50]
    assert sorted(torch.cat(epoch1).tolist()) == list(range(250))
    assert not torch.equal(torch.cat(epoch1), torch.cat(epoch2))
    again = data.InMemoryBatches(images, labels, batch_size=100, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), torch.cat(epoch1))
    x, y = next(iter(batches))
    assert torch.equal(x.flatten().long(), y)  # images and labels stay paired


def test_batches_without_shuffle_keep_the_order():
    batches = data.InMemoryBatches(torch.zeros(5, 1, 2, 2), torch.arange(5), batch_size=2, shuffle=False)
    assert [y.tolist() for _, y in batches] == [[0, 1], [2, 3], [4]]


def test_torchvision_dataset_reads_the_same_images(isolated, real_location, monkeypatch):
    monkeypatch.setenv("FMNIST_DATA", str(link_real_files(real_location, isolated / "env")))
    dataset = data.torchvision_dataset("test", transform=transforms.ToTensor())
    images, labels = data.load("test", 28)
    assert len(dataset) == 10000
    for i in (0, 1, 4242, 9999):
        image, label = dataset[i]
        assert torch.equal(image, images[i]) and label == labels[i].item()
    assert (isolated / "course" / "torchvision" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    monkeypatch.delenv("FMNIST_DATA")
    with pytest.raises(FmnistLabError, match="Fashion-MNIST not found"):
        data.find_data(download=False)  # the decompressed copies are never taken for the data
