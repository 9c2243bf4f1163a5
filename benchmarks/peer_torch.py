#!/usr/bin/env python3
"""MiniVGGNet training throughput in PyTorch, for benchmarks/peer_compare.sh.

The same model as configs/fashion_mnist_minivggnet.textproto (conv-ReLU-BN twice,
pool, dropout 0.25, twice; dense 512-ReLU-BN, dropout 0.5, dense 10), SGD with
momentum 0.9, batch 32, on Fashion-MNIST images when the Debian package is
installed (else noise of the same shape: the arithmetic, hence the speed, is the
same). --bf16 wraps forward and loss in torch.autocast("cpu", dtype=torch.bfloat16),
PyTorch's mixed precision. Prints one line: "images/s <value>".
Benchmark-only: neither the build nor the tests need PyTorch.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
from torch import nn


def load_images(limit):
    path = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        return np.random.default_rng(1).random((limit, 1, 28, 28), dtype=np.float32)
    with gzip.open(path, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    return (data[: limit * 784].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)


def mini_vgg():
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    return nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2), nn.Dropout(0.25),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.BatchNorm1d(512, eps=1e-3, momentum=0.01),
        nn.Dropout(0.5), nn.Linear(512, 10))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--bf16", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(3)
    images = torch.from_numpy(load_images(4096))
    labels = torch.randint(0, 10, (images.shape[0],))
    model = mini_vgg()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    b = a.batch_size
    times = []
    for step in range(a.warmup + a.steps):
        i = (step * b) % (images.shape[0] - b)
        x, y = images[i:i + b], labels[i:i + b]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    print("images/s %.1f" % (b * len(times) / sum(times)))


if __name__ == "__main__":
    main()
