"""Data-parallel training with PyTorch DDP on CPU (gloo), resumable from a checkpoint.

Kiln starts one copy per worker pod and sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE
and RANK; KILN_CHECKPOINT_DIR when the job has a checkpoint volume; and
KILN_RESULT_FILE, where rank 0 reports the final metrics. On SIGTERM (a
preemption, or the job suspended or deleted) rank 0 saves the last completed
epoch, if it is not saved yet, and every rank exits.

    python train.py --epochs 5
"""

import argparse
import copy
import datetime
import json
import os
import pathlib
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

try:  # Kiln's package reports rank 0's progress and the preemption handshake; without it, training is the same.
    from kiln.runtime import preemption, progress
except ImportError:
    preemption = progress = None

REQUIRED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs to train in all, counting resumed ones")
    parser.add_argument("--epoch-seconds", type=float, default=0.0, help="make each epoch last at least this long")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--timeout-seconds", type=float, default=300, help="how long to wait for a missing peer")
    parser.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS", help="save every this many epochs")
    return parser.parse_args()


def synthetic_dataset(samples: int = 2048, features: int = 8) -> TensorDataset:
    """y = Xw + 0.1 noise, identical on every rank because the generator is seeded."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    w = torch.randn(features, 1, generator=generator)
    y = x @ w + 0.1 * torch.randn(samples, 1, generator=generator)
    return TensorDataset(x, y)


def load_checkpoint(path: pathlib.Path | None, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """The epoch to start at and the last loss, restoring model and optimizer when a checkpoint exists."""
    if path is None or not path.exists():
        return 0, float("nan")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"] + 1, state["loss"]


class Checkpoints:
    """Rank 0's checkpoints: every `every` epochs, and on SIGTERM the last completed epoch if it is
    not saved yet. A copy of that epoch's state is kept, since a SIGTERM may come mid-epoch."""

    def __init__(self, path: pathlib.Path | None, every: int) -> None:
        self.path, self.every = path, every
        self.latest: dict | None = None
        self.saved_epoch: int | None = None

    def completed(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, loss: float) -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "loss": loss}
        self.latest = copy.deepcopy(state)
        if (epoch + 1) % self.every == 0:
            self.save()

    def save(self) -> None:
        if self.path is None or self.latest is None or self.latest["epoch"] == self.saved_epoch:
            return
        # A worker killed mid-write must not leave a truncated file for the restarted gang to load.
        partial = self.path.with_suffix(".tmp")
        torch.save(self.latest, partial)
        os.replace(partial, self.path)
        self.saved_epoch = self.latest["epoch"]

    def on_stop(self) -> None:
        """What SIGTERM does: rank 0 saves what it has not saved yet, and says so."""
        if self.path is None:
            print("stopping", flush=True)
            return
        if self.latest is None:
            print("stopping: no epoch completed since the start or the last resume", flush=True)
            return
        already = self.latest["epoch"] == self.saved_epoch
        self.save()
        print(f"stopping: epoch {self.latest['epoch']} is checkpointed{' already' if already else ''}", flush=True)


def on_sigterm(stop) -> None:
    """Checkpoint and exit on SIGTERM: through Kiln's handshake when Kiln's package is there (it
    also says whether this is a preemption, and sets KILN_PREEMPTED=1), else by itself."""
    if preemption is not None:
        preemption.on_sigterm(stop)
        return

    def stopped(signum, frame) -> None:
        stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """One pass over this rank's shard; returns the mean loss over every rank's samples."""
    loss_fn = nn.MSELoss(reduction="sum")
    totals = torch.zeros(2)  # summed loss, samples
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        (loss / len(x)).backward()
        optimizer.step()
        totals += torch.tensor([loss.item(), len(x)])
    dist.all_reduce(totals)
    return (totals[0] / totals[1]).item()


def main() -> int:
    args = parse_args()
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(f"train.py: {', '.join(missing)} not set; Kiln sets them in every worker pod", file=sys.stderr)
        return 2

    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=args.timeout_seconds))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    checkpoint_dir = os.environ.get("KILN_CHECKPOINT_DIR")
    checkpoint = pathlib.Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # Every rank loads before DDP's first collective, so rank 0 cannot overwrite the file while a
    # peer is still reading it: rank 0 only saves after an epoch that needs every rank.
    start, loss = load_checkpoint(checkpoint, model, optimizer)
    print(f"resumed at epoch {start}" if start else "starting at epoch 0", flush=True)
    ddp = DistributedDataParallel(model)

    dataset = synthetic_dataset()
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
    reports = progress.Reporter() if progress is not None else None
    checkpoints = Checkpoints(checkpoint if rank == 0 else None, args.checkpoint_every)
    on_sigterm(checkpoints.on_stop)
    for epoch in range(start, args.epochs):
        time.sleep(args.epoch_seconds)
        sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        loss = train_epoch(ddp, loader, optimizer)
        if rank == 0:
            print(f"epoch {epoch} loss {loss:.6f}", flush=True)
            checkpoints.completed(epoch, model, optimizer, loss)
        if reports is not None:  # only rank 0's reports are sent
            reports.report(epoch + 1, args.epochs, epoch=epoch, metrics={"loss": loss})
    if reports is not None:
        reports.close()

    result_file = os.environ.get("KILN_RESULT_FILE")
    if rank == 0 and result_file:
        pathlib.Path(result_file).write_text(json.dumps({"metrics": {"loss": loss, "epochs": float(args.epochs)}}))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
