"""The chapter's training code as its readers run it: one standalone script, the second baseline
of the speed claims (docs/benchmarks.md, "The chapter's script").

Transcribed from the chapter's listing: torchvision's FashionMNIST with ToTensor, DataLoader
(batch 64, shuffled), the chapter's CNN (three 3x3 convolutions of 32, 64 and 128 channels with
ReLU, 2x2 max-pooling after the first two, 1152 -> 64 -> 10, and its Softmax), CrossEntropyLoss,
Adam at 1e-3, and after each epoch the test accuracy it prints. Nothing of this project is
imported and nothing is tuned: no thread, allocator or OpenMP setting, torch's defaults.

Changed only where it must be:
- ``--raw-folder``: a folder holding the four published .gz files, unpacked where torchvision
  looks before it would download (the chapter's download=True goes to torchvision's mirror,
  which a machine without internet cannot reach, and torchvision cannot fetch a file:// URL);
  without it the script downloads, as the chapter's does;
- ``--root``, ``--epochs``: where the files go, and how many of the chapter's 30 epochs to run;
- ``--train-images``: the first N training images only, for the tests (the chapter trains on all);
- each epoch's line is flushed as it is printed, so that a caller can time it.

Run: ``python tools/chapter_listing.py --raw-folder /usr/share/datasets/fashion-mnist``
"""

import argparse
import gzip
import shutil
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--raw-folder", help="the four .gz files, instead of downloading them")
parser.add_argument("--root", default="data")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--train-images", type=int, default=0, help="0 = all 60,000 (the chapter)")
args = parser.parse_args()

if args.raw_folder:
    raw = Path(args.root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for packed in Path(args.raw_folder).glob("*-ubyte.gz"):
        with gzip.open(packed) as source, open(raw / packed.stem, "wb") as target:
            shutil.copyfileobj(source, target)

transform = transforms.Compose([transforms.ToTensor()])
train_set = torchvision.datasets.FashionMNIST(
    root=args.root, train=True, download=True, transform=transform
)
test_set = torchvision.datasets.FashionMNIST(
    root=args.root, train=False, download=True, transform=transform
)
if args.train_images:
    train_set = Subset(train_set, range(args.train_images))
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
test_loader = DataLoader(test_set, batch_size=64, shuffle=False)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, kernel_size=3),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 3 * 3, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
            nn.Softmax(dim=1),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


model = CNN()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

for epoch in range(args.epochs):
    model.train()
    running_loss = 0.0
    for images, labels in train_loader:
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            outputs = model(images)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print(
        f"Epoch {epoch + 1}/{args.epochs}, loss {running_loss / len(train_loader):.4f}, "
        f"test accuracy {100 * correct / total:.2f}%",
        flush=True,
    )
