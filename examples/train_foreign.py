"""Train one of the small SpikingJelly or snnTorch networks of ``sj_nets.py`` / ``snntorch_tutorial.py`` on
Fashion-MNIST with the framework's own neurons and surrogates, clean or with Gaussian noise on the input (the zoo's
``gaussian`` recipe: ``x + sigma * N(0, 1)``, not clipped), and write a plain state dict for ``robench zoo import``.

The loss is the cross-entropy of the read-out averaged over T, what robench attacks: the network's output for a
SpikingJelly net, the output membrane (``--output 1`` of ``(spk, mem)``) for the snnTorch one::

    python examples/train_foreign.py --net sj --kwargs '{"neuron": "plif", "surrogate": "atan", "alpha": 2.0}' \\
        --sigma 8/255 --out runs/sj-plif-atan.pt                        # ~10 min on one CPU thread
    python examples/train_foreign.py --net snntorch --sigma 8/255 --out runs/snntorch-leaky.pt

scripts/foreign_zoo.sh trains and imports the three foreign zoo entries this way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robench.data import load  # noqa: E402  (only for the data: images [N, 1, 28, 28] in [0, 1])


def sj_net(kwargs: dict) -> tuple[nn.Module, callable]:
    from sj_nets import build
    from spikingjelly.activation_based import functional

    net = build(**kwargs)

    def run(x: torch.Tensor, T: int) -> torch.Tensor:  # [B, 1, 28, 28] -> [B, K]
        functional.reset_net(net)  # SpikingJelly keeps membranes between calls
        out = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)  # [T, B, 1, 28, 28] -> [T, B, K] -> [B, K]
        functional.reset_net(net)
        return out

    return net, run


def snntorch_net(kwargs: dict) -> tuple[nn.Module, callable]:
    import snntorch as snn
    from snntorch_tutorial import build

    net = build(**kwargs)

    def run(x: torch.Tensor, T: int) -> torch.Tensor:  # the membrane of the output layer, averaged over T steps
        for m in net.modules():
            if isinstance(m, snn.SpikingNeuron):
                m.reset_mem()
        return torch.stack([net(x)[1] for _ in range(T)]).mean(0)  # T x [B, K] -> [B, K]

    return net, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", choices=("sj", "snntorch"), required=True)
    p.add_argument("--kwargs", default="{}", help="Keyword arguments of the net's build(), a JSON object.")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sigma", default="0", help="Gaussian-noise std on the training inputs, e.g. 8/255 (0: clean).")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("-T", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=None, help="Train on the first N images only.")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    sigma = float(Fraction(a.sigma))
    x, y = load("fashion-mnist", "train", a.data_dir, limit=a.limit)
    xt, yt = load("fashion-mnist", "test", a.data_dir, limit=1000)
    net, run = (sj_net if a.net == "sj" else snntorch_net)(json.loads(a.kwargs))
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    steps = a.epochs * ((len(x) + a.batch_size - 1) // a.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps)
    t0 = time.time()
    for epoch in range(a.epochs):
        net.train()
        for i, idx in enumerate(torch.randperm(len(x)).split(a.batch_size)):
            xb = x[idx] + sigma * torch.randn_like(x[idx])  # the gaussian recipe: not clipped
            loss = F.cross_entropy(run(xb, a.T), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if i % 50 == 0:
                print(f"epoch {epoch} batch {i} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    net.eval()
    with torch.no_grad():
        out = torch.cat([run(xb, a.T) for xb in xt.split(250)])
    print(f"test accuracy {(out.argmax(1) == yt).float().mean():.4f} on {len(yt)} images, {time.time() - t0:.0f}s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
