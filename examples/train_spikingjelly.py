"""Train the small SpikingJelly VGG of ``sj_vgg.py`` on Fashion-MNIST with SpikingJelly's own training loop.

It writes a plain state dict; bring it into the zoo with ``robench zoo import`` (README, "Your own models")::

    python examples/train_spikingjelly.py --out runs/sj-vgg.pt          # ~10 min on one CPU thread
    ROBENCH_TRUST_CODE=1 robench zoo import runs/sj-vgg.pt --id fmnist-sjvgg-lif-clean --trust-code \\
        --framework spikingjelly --entry examples.sj_vgg:build --code-path . -T 4 --dataset fashion-mnist
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sj_vgg import build  # noqa: E402

from robench.data import load  # noqa: E402  (only for the data: images [N, 1, 28, 28] in [0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/sj-vgg.pt"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("-T", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=None, help="Train on the first N images only.")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    x, y = load("fashion-mnist", "train", a.data_dir, limit=a.limit)
    xt, yt = load("fashion-mnist", "test", a.data_dir, limit=1000)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = a.epochs * ((len(x) + a.batch_size - 1) // a.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps)
    t0 = time.time()
    for epoch in range(a.epochs):
        model.train()
        for i, idx in enumerate(torch.randperm(len(x)).split(a.batch_size)):
            xs = x[idx].unsqueeze(0).repeat(a.T, 1, 1, 1, 1)  # [B, 1, 28, 28] -> [T, B, 1, 28, 28]
            loss = F.cross_entropy(model(xs).mean(0), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            functional.reset_net(model)  # SpikingJelly keeps membranes between calls: reset after every batch
            if i % 50 == 0:
                print(f"epoch {epoch} batch {i} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(xb.unsqueeze(0).repeat(a.T, 1, 1, 1, 1)).mean(0) for xb in xt.split(250)])
        functional.reset_net(model)
    print(f"test accuracy {(out.argmax(1) == yt).float().mean():.4f} on {len(yt)} images, {time.time() - t0:.0f}s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
