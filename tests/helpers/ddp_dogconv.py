"""Run by tests/dog_init/test_dogconv_convert.py under ``torchrun --nproc_per_node 2``: a converted model trains
under Accelerate's DDP (CPU, gloo) and its DoGConv2d parameters stay identical across the processes. Writes rank 0's
JSON to argv[1]."""
import json
import sys

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from timm.models.convmixer import ConvMixer

import dog_init


def main(out: str) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=4, num_classes=4)
    dog_init.convert_(model, "paper", seed=0, residual=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    start = torch.cat([p.detach().flatten() for p in model.blocks[0][0].fn[0].parameters()])
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(100 + accelerator.process_index)   # different data per process
    losses = []
    x = torch.randn(8, 3, 16, 16, generator=generator)
    y = torch.randint(0, 4, (8,), generator=generator)
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        losses.append(loss.item())
    layer = accelerator.unwrap_model(model).blocks[0][0].fn[0]
    flat = torch.cat([p.detach().flatten() for p in layer.parameters()])
    gathered = accelerator.gather(flat[None])
    if accelerator.is_main_process:
        result = {"world": accelerator.num_processes, "distributed": str(accelerator.distributed_type),
                  "max_param_diff": (gathered[0] - gathered[1]).abs().max().item(),
                  "moved": (flat - start).abs().max().item(), "losses": losses,
                  "residual_norm": layer.residual_norm(), "is_dogconv": isinstance(layer, dog_init.DoGConv2d)}
        with open(out, "w") as f:
            json.dump(result, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
