"""Tiny synthetic data, a tiny model and a zoo in tmp_path, shared by every test file."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TERMINAL_WIDTH", "200")
os.environ.setdefault("_TYPER_FORCE_DISABLE_TERMINAL", "1")
os.environ.setdefault("COLUMNS", "200")
torch.set_num_threads(min(2, torch.get_num_threads()))

from robench.snn.models import ModelConfig, build_model  # noqa: E402

TINY = dict(arch="vgg5", neuron="lif", T=2, width=0.125, fc=16, in_channels=1, image_size=8, num_classes=2,
            mean=(0.5,), std=(0.5,))


def make_tiny_data(n: int = 64, seed: int = 0, classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny 8x8 task, images ``[n, 1, 8, 8]`` in [0, 1], labels ``[n]``. Two classes: class 1 images are brighter
    in the left half; four: class c images are 0.3 brighter in quadrant c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    if classes == 2:
        x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
        x[y == 1, :, :, :4] += 0.5
        return x.clamp(0, 1), y
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.6
    for c in range(classes):
        r, q = divmod(c, 2)
        x[y == c, :, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 0.3
    return x.clamp(0, 1), y


def train_tiny(classes: int = 2):
    """The tiny model (``classes`` outputs) trained (clean, 3 epochs, seed 0) well enough that attacks have something
    to break; eval mode. Each test module that needs it builds its own in a module-scoped fixture."""
    from robench.train import TrainConfig, train

    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, "num_classes": classes}))
    train(model, TrainConfig(recipe="clean", epochs=3, lr=0.1, batch_size=16),
          make_tiny_data(128 * classes // 2, 0, classes), make_tiny_data(64, 1, classes))
    return model.eval()


ATTACK_EPS = 0.1  # the L-inf budget at which the four-class model is neither robust nor broken everywhere


@pytest.fixture(scope="session")
def attacked():
    """The tiny model with four classes, trained, and 64 test images ``(model, x, y)``, shared by the attack tests
    (one training per session: never change its weights)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic training
    try:
        model = train_tiny(classes=4).requires_grad_(False)
    finally:
        torch.set_num_threads(threads)
    return (model, *make_tiny_data(64, 1, classes=4))


@pytest.fixture
def tiny_data():
    return make_tiny_data()


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(**TINY)


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return build_model(tiny_cfg).eval()


@pytest.fixture
def trained_zoo(tmp_path):
    """A zoo in tmp_path with one tiny entry trained for a few steps: (zoo_dir, card, model)."""
    from robench.train import TrainConfig, train
    from robench.zoo import Card, save

    torch.manual_seed(0)
    cfg = ModelConfig(**TINY)
    model = build_model(cfg)
    data = make_tiny_data(128)
    res = train(model, TrainConfig(recipe="clean", epochs=3, lr=0.1, batch_size=16), data, make_tiny_data(64, 1))
    card = Card.new("tiny-vgg5-lif-clean", cfg, "fashion-mnist", recipe={"recipe": "clean"},
                    metrics={"clean_acc": res.clean_acc, "n_test": res.n_test})
    zoo_dir = tmp_path / "zoo"
    save(model, card, zoo_dir)
    return zoo_dir, card, model.eval()


@pytest.fixture
def one_thread():
    """One torch thread, as the subprocesses of the reliability tests use: quicker on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
