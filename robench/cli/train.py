"""`robench train`: parse the training flags, run one job, report the saved entry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DataDirOpt, DeviceOpt, Neuron, ZooOpt, app, command_line, lazy_progress, print_saved, train_progress


@app.command()
def train(
    arch: Annotated[str, typer.Option(help="Architecture: vgg5, vgg11, wrn16.")] = "vgg5",
    neuron: Annotated[Neuron, typer.Option(help="lif, or stable (DLIF with learnable gains).")] = Neuron.lif,
    recipe: Annotated[str, typer.Option(help="clean, gaussian (gn), fgsm-at (at), pgd-at, rat.")] = "clean",
    dataset: Annotated[str, typer.Option(help="fashion-mnist, cifar10, cifar100.")] = "fashion-mnist",
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option(help="Download CIFAR into --data-dir with torchvision (online).")] = False,
    T: Annotated[int, typer.Option("--T", "-T", "--timesteps", help="Time steps.")] = 4,
    width: Annotated[float, typer.Option(help="Channel width multiplier.")] = 1.0,
    fc: Annotated[int | None, typer.Option(help="Classifier width (default: the arch's).")] = None,
    encoding: Annotated[str, typer.Option(help="Input coding: direct (the image at every step) or poisson "
                                          "(Bernoulli spikes with p = pixel at every step; the gradient through "
                                          "the draws is their expectation).")] = "direct",
    tau: Annotated[float, typer.Option(help="Membrane leak.")] = 0.99,
    v_th: Annotated[float, typer.Option("--v-th", help="Threshold.")] = 1.0,
    alpha: Annotated[float, typer.Option(help="MPPD regulariser weight (0 = off).")] = 0.0,
    kappa: Annotated[float, typer.Option(help="Weight of the clean CE term.")] = 0.5,
    sigma: Annotated[str, typer.Option(help="Gaussian-noise std for --recipe gaussian.")] = "8/255",
    eps: Annotated[str, typer.Option(help="L-inf budget for fgsm-at / pgd-at.")] = "4/255",
    pgd_steps: Annotated[int, typer.Option(help="PGD-AT steps.")] = 3,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 1,
    lr: Annotated[float, typer.Option(help="SGD learning rate (cosine to 0).")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 5e-4; 0 with rat).")] = None,
    rat_beta: Annotated[float | None, typer.Option(help="Orthogonality strength of --recipe rat (default 0.001; "
                                                   "0.004 for wrn16).")] = None,
    augment: Annotated[bool | None, typer.Option(help="Random crop + flip (default: on for CIFAR).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    ckpt_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: per epoch).")] = 0,
    entry_id: Annotated[str | None, typer.Option("--id", help="Zoo id (default: derived).")] = None,
    zoo: ZooOpt = Path("zoo"),
    runs: Annotated[Path, typer.Option(help="Folder for resumable run state.")] = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run with the same options.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing zoo entry; start over a run whose state is "
                                            "saved in --runs.")] = False,
    sync_bn: Annotated[bool, typer.Option(help="Under torchrun: synchronise batch norm across GPUs.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train an SNN with a recipe and write it into the zoo.

    Under `torchrun --nproc_per_node K -m -- robench train ...`: DistributedDataParallel, global batch K x
    --batch-size; rank 0 writes checkpoints and the entry.
    """
    from ..dist import env_rank
    from ..train.job import job_from_options, run_job

    opts = dict(arch=arch, neuron=neuron.value, recipe=recipe, dataset=dataset, data_dir=data_dir, T=T,
                width=width, fc=fc, encoding=encoding, tau=tau, v_th=v_th, alpha=alpha, kappa=kappa, sigma=sigma,
                eps=eps,
                pgd_steps=pgd_steps, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                augment=augment, seed=seed, limit=limit, ckpt_every=ckpt_every, id=entry_id, device=device,
                download=download, rat_beta=rat_beta, sync_bn=sync_bn)
    job = job_from_options(opts, command_line())
    with lazy_progress() as bar:
        card = run_job(job, zoo, runs, resume=resume, overwrite=overwrite,
                       progress=train_progress(bar) if env_rank() == 0 else None)
    if card is not None:  # None on torchrun ranks > 0
        print_saved(card, zoo)
