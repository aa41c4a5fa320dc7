"""Run under torchrun by test_distributed: train a few steps, dump this rank's weights."""

import sys
from pathlib import Path

import torch

from wgan import distributed
from wgan.dataset import ImageFolder
from wgan.options import build_options
from wgan.training import Trainer

if __name__ == "__main__":
    data, out, flags = sys.argv[1], Path(sys.argv[2]), eval(sys.argv[3])  # noqa: S307
    world = distributed.init("cpu")
    opts = build_options({**flags, "data": data, "outdir": str(out)})
    trainer = Trainer(opts, ImageFolder(data, opts.image_size), out / "run", world)
    (out / "run").mkdir(exist_ok=True)
    trainer.train()
    weights = {"generator": trainer.generator.state_dict(), "critic": trainer.critic.state_dict(),
               "counters": trainer.counters.to_dict()}
    torch.save(weights, out / f"rank{world.rank}.pt")
    distributed.shutdown(world, finished=True)
