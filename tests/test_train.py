"""fmnist_lab.train and the engine: the loop's history, determinism, the summed cost, devices and checkpoints."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from fmnist_lab import evaluate
from fmnist_lab import train as train_module
from fmnist_lab.data import InMemoryBatches
from fmnist_lab.engine import EpochRecord, Plan, fit
from fmnist_lab.errors import FmnistLabError
from fmnist_lab.models import CNN, CNNBatch
from fmnist_lab.original import ORIGINAL, ORIGINAL_SETTINGS
from fmnist_lab.train import get_device, load_checkpoint, save_checkpoint, seed_everything, train


@pytest.fixture(scope="module")
def small(train16, test16):
    """3,000 training and 1,000 test images: enough to see learning in a second."""
    return (train16[0][:3000], train16[1][:3000]), (test16[0][:1000], test16[1][:1000])


def _run(small, seed):
    seed_everything(seed)
    model = CNNBatch()
    history = train(model, *small, epochs=2, seed=seed, progress=False, device="cpu")
    return model, history


def test_history_has_one_record_per_epoch_and_learns(small):
    _, history = _run(small, 0)
    assert [r["epoch"] for r in history] == [1, 2]
    assert (
        list(history[0])
        == list(EpochRecord.__annotations__)
        == ["epoch", "cost", "mean_loss", "val_accuracy", "seconds"]
    )
    assert all(r["mean_loss"] == r["cost"] / 30 for r in history)  # 3,000 images: 30 batches
    assert history[1]["cost"] < history[0]["cost"]
    assert history[1]["val_accuracy"] > 0.6  # chance is 0.1
    assert all(r["seconds"] > 0 for r in history)


def test_same_seed_same_numbers_and_weights_other_seed_differs(small):
    model_a, history_a = _run(small, 0)
    model_b, history_b = _run(small, 0)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history_a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in history_b]
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    _, history_c = _run(small, 1)
    assert history_c[0]["cost"] != history_a[0]["cost"]


def test_train_takes_the_steps_of_lesson_04s_loop_bit_for_bit(small):
    """`train` on 2,000 images for one epoch against the loop written out: same weights, cost and accuracy."""
    (images, labels), val = small
    images, labels = images[:2000], labels[:2000]
    seed_everything(0)
    model = CNNBatch()
    history = train(model, (images, labels), val, epochs=1, seed=0, progress=False, device="cpu")
    seed_everything(0)
    reference = CNNBatch().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    cost = torch.zeros(())
    reference.train()
    for x, y in InMemoryBatches(images, labels, batch_size=100, shuffle=True, seed=0):
        optimizer.zero_grad()
        loss = criterion(reference(x.contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        optimizer.step()
        cost += loss.detach()
    val_accuracy = evaluate.accuracy(reference, *val)
    reference.to(memory_format=torch.contiguous_format)
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert history[0]["cost"] == cost.item() and history[0]["mean_loss"] == cost.item() / 20
    assert history[0]["val_accuracy"] == val_accuracy
    assert not model.training and model.cnn1.weight.is_contiguous()  # eval mode, the usual layout


def test_the_original_settings_come_from_one_value():
    defaults = {name: p.default for name, p in inspect.signature(train).parameters.items()}
    assert (defaults["epochs"], defaults["lr"], defaults["batch_size"]) == (
        ORIGINAL.epochs,
        ORIGINAL.lr,
        ORIGINAL.batch_size,
    )
    assert (Plan().epochs, Plan().lr, Plan().batch_size) == (ORIGINAL.epochs, ORIGINAL.lr, ORIGINAL.batch_size)
    assert train_module.ORIGINAL_RUN == {key: ORIGINAL_SETTINGS[key] for key in train_module.ORIGINAL_RUN}
    assert ORIGINAL_SETTINGS == {
        "model": "cnn_batch",
        "params": 18_494,
        "epochs": 5,
        "batch_size": 100,
        "lr": 0.1,
        "image_size": 16,
        "optimizer": "SGD",
    }
    with pytest.raises(AttributeError):
        ORIGINAL.lr = 1.0  # frozen


def test_the_package_has_one_training_loop():
    package = Path(train_module.__file__).parent
    steps = {
        path.name: len(re.findall(r"optimizer\.step\(\)", path.read_text(encoding="utf-8")))
        for path in package.glob("*.py")
    }
    assert sum(steps.values()) == 1 and steps["engine.py"] == 1, steps


def test_cost_is_the_sum_of_batch_losses_like_the_original(small):
    (images, labels), _ = small
    seed_everything(0)
    model = CNN()  # no batch norm: with lr 0 the model cannot change during the epoch
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    history = train(model, (images, labels), None, epochs=1, optimizer=frozen, progress=False)
    with torch.no_grad():
        total = nn.CrossEntropyLoss(reduction="sum")(model(images), labels).item()
    assert history[0]["cost"] == pytest.approx(total / 100, rel=1e-5)  # 30 batches of 100
    assert history[0]["mean_loss"] == pytest.approx(total / 3000, rel=1e-5)
    assert history[0]["val_accuracy"] is None


def test_training_rejects_images_of_the_wrong_size(small):
    (images, labels), _ = small
    with pytest.raises(FmnistLabError, match="expects 28×28 images, got 16×16"):
        train(CNNBatch(image_size=28), (images, labels), epochs=1, progress=False)


def test_device_prefers_cuda_then_mps_then_cpu():
    device = get_device()
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device.type == "cpu"


def test_checkpoint_round_trip_keeps_weights_config_and_history(tmp_path, small):
    model, history = _run(small, 0)
    path = save_checkpoint(model, tmp_path / "run" / "model_weights.pth", {"lr": 0.1}, history)
    info = json.loads((tmp_path / "run" / "model_weights.json").read_text())
    assert info["model"] == "cnn_batch" and info["params"] == 18_494 and info["lr"] == 0.1
    assert info["history"][1]["cost"] == history[1]["cost"]
    loaded, loaded_info = load_checkpoint(path, device="cpu")
    assert not loaded.training and loaded_info["image_size"] == 16
    x = small[1][0][:50]
    assert torch.allclose(loaded(x), model.eval().cpu()(x), atol=1e-5)  # memory layouts differ


def test_a_channels_last_model_saves_the_same_bytes_as_the_contiguous_one(tmp_path, small):
    model, _ = _run(small, 0)  # train hands the model back in the default layout
    contiguous = save_checkpoint(model, tmp_path / "a" / "model_weights.pth").read_bytes()
    model.to(memory_format=torch.channels_last)  # as fit leaves it, which the CLI saves
    assert save_checkpoint(model, tmp_path / "b" / "model_weights.pth").read_bytes() == contiguous


def test_fit_hands_back_the_last_validation_s_predictions(small):
    seed_everything(0)
    run = fit(CNNBatch(), *small, Plan(epochs=1), device="cpu")
    final = evaluate.predicted_classes(run.model, small[1][0])
    assert torch.equal(run.val_predicted, final)
    assert evaluate.fraction_right(run.val_predicted, small[1][1]) == run.history[-1]["val_accuracy"]
    seed_everything(0)
    assert fit(CNNBatch(), small[0], None, Plan(epochs=1), device="cpu").val_predicted is None


def test_weights_without_json_are_read_as_the_original_notebooks(tmp_path):
    torch.save(CNNBatch().state_dict(), tmp_path / "model_weights.pth")
    model, info = load_checkpoint(tmp_path / "model_weights.pth", device="cpu")
    assert isinstance(model, CNNBatch) and info == {"model": "cnn_batch", "image_size": 16}
    torch.save(CNN(image_size=28).state_dict(), tmp_path / "plain.pth")
    model, info = load_checkpoint(tmp_path / "plain.pth", device="cpu")
    assert isinstance(model, CNN) and model.image_size == 28


def test_weights_of_another_architecture_get_a_clear_message(tmp_path):
    path = save_checkpoint(CNNBatch(), tmp_path / "model_weights.pth")
    torch.save(CNN().state_dict(), path)  # the JSON still says cnn_batch
    with pytest.raises(
        FmnistLabError,
        match="weights of another architecture, not CNNBatch: missing "
        r"\['bn_fc1.bias'",
    ):
        load_checkpoint(path, device="cpu")
    torch.save(CNNBatch(image_size=28).state_dict(), path)
    with pytest.raises(FmnistLabError, match=r"fc1.weight is \(10, 1568\), CNNBatch at 16×16 needs \(10, 512\)"):
        load_checkpoint(path, device="cpu")


def test_missing_and_unreadable_weights_files(tmp_path):
    with pytest.raises(FmnistLabError, match="no such weights file"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(FmnistLabError, match="not a PyTorch weights file"):
        load_checkpoint(tmp_path / "notes.pth")
