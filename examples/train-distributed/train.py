"""Data-parallel training with PyTorch DDP on CPU (gloo), resumable from a checkpoint.

Kiln starts one copy per worker pod and sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE
and RANK; KILN_CHECKPOINT_DIR when the job has a checkpoint volume; and
KILN_RESULT_FILE, where rank 0 reports the final metrics.

    python train.py --epochs 5
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

REQUIRED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs to train in all, counting resumed ones")
    parser.add_argument("--epoch-seconds", type=float, default=0.0, help="make each epoch last at least this long")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--timeout-seconds", type=float, default=300, help="how long to wait for a missing peer")
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


def save_checkpoint(
    path: pathlib.Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, loss: float
) -> None:
    # A worker killed mid-write must not leave a truncated file for the restarted gang to load.
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "loss": loss}
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    os.replace(partial, path)


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
    for epoch in range(start, args.epochs):
        time.sleep(args.epoch_seconds)
        sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        loss = train_epoch(ddp, loader, optimizer)
        if rank == 0:
            print(f"epoch {epoch} loss {loss:.6f}", flush=True)
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, epoch, loss)

    result_file = os.environ.get("KILN_RESULT_FILE")
    if rank == 0 and result_file:
        pathlib.Path(result_file).write_text(json.dumps({"metrics": {"loss": loss, "epochs": float(args.epochs)}}))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
