"""The original notebook's whole job as one script: what `benchmarks/reproduce.py` times beside `fmnist-lab train`.

As the original did it: torchvision's `FashionMNIST` with `Resize((16, 16))` and `ToTensor()` on PIL images, a
`DataLoader` (batch 100, shuffled), its `CNN_batch`, SGD at learning rate 0.1 for 5 epochs, the validation
accuracy after every epoch, then the weights and its four figures (training curves, confusion matrix, sample
predictions, sample images). Only the data's location differs: the verified local files instead of a download.
Usage: python benchmarks/original_pipeline.py OUT_FOLDER [--epochs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision.transforms as transforms  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from fmnist_lab.data import CLASS_NAMES, torchvision_dataset  # noqa: E402 - the files, not the pipeline


class CNN_batch(nn.Module):  # noqa: N801 - the original's name
    """The original notebook's model, as it wrote it."""

    def __init__(self, out_1=16, out_2=32, number_of_classes=10):
        super().__init__()
        self.cnn1 = nn.Conv2d(in_channels=1, out_channels=out_1, kernel_size=5, padding=2)
        self.conv1_bn = nn.BatchNorm2d(out_1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(in_channels=out_1, out_channels=out_2, kernel_size=5, stride=1, padding=2)
        self.conv2_bn = nn.BatchNorm2d(out_2)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(out_2 * 4 * 4, number_of_classes)
        self.bn_fc1 = nn.BatchNorm1d(10)

    def forward(self, x):
        x = self.cnn1(x)
        x = self.conv1_bn(x)
        x = torch.relu(x)
        x = self.maxpool1(x)
        x = self.cnn2(x)
        x = self.conv2_bn(x)
        x = torch.relu(x)
        x = self.maxpool2(x)
        x = x.view(x.size(0), -1)
        x = self.fc1(x)
        x = self.bn_fc1(x)
        return x


def figures(out: Path, cost_list, accuracy_list, model, dataset_val) -> None:
    """The original's four figures, drawn with matplotlib and saved as PNG."""
    fig, ax1 = plt.subplots()
    ax1.plot(cost_list, color="tab:red")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("Cost", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(accuracy_list, color="tab:blue")
    ax2.set_ylabel("accuracy", color="tab:blue")
    fig.savefig(out / "training_curves.png")
    model.eval()
    predicted, truth = [], []
    with torch.no_grad():
        for x_test, y_test in DataLoader(dataset=dataset_val, batch_size=5000):
            predicted.append(torch.max(model(x_test).data, 1)[1])
            truth.append(y_test)
    predicted, truth = torch.cat(predicted).numpy(), torch.cat(truth).numpy()
    matrix = np.zeros((10, 10), dtype=int)
    np.add.at(matrix, (truth, predicted), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        ax.text(column, row, str(value), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(10), CLASS_NAMES, rotation=45)
    ax.set_yticks(range(10), CLASS_NAMES)
    fig.savefig(out / "confusion_matrix.png")
    fig, axes = plt.subplots(2, 5, figsize=(10, 4))
    for i, ax in enumerate(axes.flat):
        ax.imshow(dataset_val[i][0][0], cmap="gray")
        ax.set_title(f"{CLASS_NAMES[truth[i]]} / {CLASS_NAMES[predicted[i]]}", fontsize=8)
        ax.axis("off")
    fig.savefig(out / "sample_predictions.png")
    raw = torchvision_dataset("train", transform=transforms.ToTensor())
    fig, axes = plt.subplots(2, 5, figsize=(10, 4))
    for i, ax in enumerate(axes.flat):
        image, label = raw[i]
        ax.imshow(image[0], cmap="gray")
        ax.set_title(CLASS_NAMES[label], fontsize=8)
        ax.axis("off")
    fig.savefig(out / "sample_images.png")


def main() -> int:
    """Train and report as the original did; print its table and the training time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    composed = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    dataset_train = torchvision_dataset("train", transform=composed)
    dataset_val = torchvision_dataset("test", transform=composed)
    model = CNN_batch(out_1=16, out_2=32)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_loader = DataLoader(dataset=dataset_train, batch_size=100, shuffle=True)
    test_loader = DataLoader(dataset=dataset_val, batch_size=5000)
    cost_list, accuracy_list, n_test = [], [], len(dataset_val)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        cost = 0
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            cost += loss.item()
        correct = 0
        model.eval()
        with torch.no_grad():
            for x_test, y_test in test_loader:
                _, yhat = torch.max(model(x_test).data, 1)
                correct += (yhat == y_test).sum().item()
        accuracy_list.append(correct / n_test)
        cost_list.append(cost)
        print(f"epoch {epoch + 1}: cost {cost:.2f}, accuracy {correct / n_test:.2%}")
    print(f"training time: {time.perf_counter() - start:.2f} s")
    torch.save(model.state_dict(), args.out / "model_weights.pth")
    figures(args.out, cost_list, accuracy_list, model, dataset_val)
    return 0


if __name__ == "__main__":
    sys.exit(main())
