#!/usr/bin/env python3
"""MoCo v2 pre-training step written the way a PyTorch user would: the Python half of the training benchmark.

The same step as `comcl pretrain --method moco` (training/src/pretrain.cpp, moco.cpp), data path included:
  * a torch.utils.data.Dataset that reads the real PNG files of one or more manifest.csv (column `file`,
    relative to the manifest's folder) with PIL, converts them to grey, resizes the short side to 256 and
    centre-crops 256 x 256 (what the comcl image cache holds);
  * two views per image with torchvision transforms on PIL images in DataLoader worker processes:
    RandomResizedCrop(S, scale (0.2, 1)), RandomHorizontalFlip, RandomRotation(--rotation, default 0 as in
    the engine's MoCo v2 preset), ColorJitter(0.4, 0.4) with p 0.8, GaussianBlur(odd kernel ~0.1 S,
    sigma (0.1, 2)) with p 0.5, ToTensor, Normalize(0.5, 0.25); shuffle, drop_last;
  * torchvision ResNet-18 with a 1-channel conv1 and an MLP head 512-512-128, a momentum key encoder
    (m 0.999, parameters only), a queue of K normalised keys, logits [l_pos, l_neg] / T (T 0.2), cross-entropy,
    Adam lr 1e-4 weight decay 1e-4, and shuffle BN emulated on one device: the key batch is shuffled and passes
    the key encoder in 2 chunks, then is unshuffled; the query batch passes in 2 contiguous chunks.

Images/s counts query images (the batch size) per second of wall time over the timed steps, data loading
included; data_wait_share is the fraction of that time spent waiting for the DataLoader's next batch.
Prints one JSON line at the end (progress goes to stderr).

usage (Debian's python3-torch 1.13 and python3-torchvision 0.14, so /usr/bin/python3, not a pyenv python):
  /usr/bin/python3 bench/training/moco_step.py --manifest ../shared/data/mhh_covid_cxr/manifest.csv \
      [--manifest ../shared/data/covid_chestxray_subset/manifest.csv] --image-size 64 --batch-size 32 \
      --steps 16 [--warmup 3] [--workers 1] [--queue-size 256] [--threads N] [--seed 0]
bench/training/run_train_bench.sh runs it beside `comcl pretrain` with the same settings on the CPU;
bench/training/run_gpu_bench.sh on a CUDA machine (--device cuda --precision fp32/bf16/fp16, --comcl-db DB reads
the images from a comcl image cache, --synthetic times the step on a batch already on the GPU).
"""

import argparse
import copy
import csv
import json
import os
import sqlite3
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms

CACHE_SIZE = 256  # the comcl image cache's square size


class ManifestImages(torch.utils.data.Dataset):
    """The PNG files of one or more manifest.csv, as the comcl cache holds them, with two random views each."""

    def __init__(self, manifests, view_transform):
        self.files = []
        for manifest in manifests:
            folder = os.path.dirname(os.path.abspath(manifest))
            with open(manifest, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("file"):
                        self.files.append(os.path.join(folder, row["file"]))
        if not self.files:
            raise SystemExit("no images listed in " + ", ".join(manifests))
        self.view = view_transform
        self.to_cache = transforms.Compose([transforms.Resize(CACHE_SIZE), transforms.CenterCrop(CACHE_SIZE)])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        with Image.open(self.files[index]) as image:
            grey = self.to_cache(image.convert("L"))
        return self.view(grey), self.view(grey)


class CacheImages(torch.utils.data.Dataset):
    """The decoded images of a comcl index, read straight from its image cache (DB + ".images"): the bytes
    `comcl pretrain` reads, without PNG decoding (used where the PNG files are not at hand, e.g. a GPU machine).
    Layout (storage/src/image_cache.cpp): a 4096-byte file header whose u64 at offset 24 is the slot stride,
    then slots of a 32-byte header and size x size 8-bit pixels."""

    def __init__(self, db, view_transform):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            self.slots = [row[0] for row in connection.execute(
                "SELECT cache_slot FROM instances WHERE cache_slot IS NOT NULL ORDER BY id")]
        if not self.slots:
            raise SystemExit(f"no cached images in {db}")
        self.path = db + ".images"
        with open(self.path, "rb") as f:
            header = f.read(32)
        self.stride = int.from_bytes(header[24:32], "little")
        self.view = view_transform

    def __len__(self):
        return len(self.slots)

    def __getitem__(self, index):
        with open(self.path, "rb") as f:
            f.seek(4096 + self.slots[index] * self.stride + 32)
            grey = Image.frombytes("L", (CACHE_SIZE, CACHE_SIZE), f.read(CACHE_SIZE * CACHE_SIZE))
        return self.view(grey), self.view(grey)


def view_transform(size, rotation):
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, about 0.1 * size (MoCo v2: 23 at 224)
    steps = [transforms.RandomResizedCrop(size, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip()]
    if rotation > 0:
        steps.append(transforms.RandomRotation(rotation))
    steps += [
        transforms.RandomApply([transforms.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
        transforms.RandomApply([transforms.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.5], std=[0.25]),
    ]
    return transforms.Compose(steps)


def encoder(dim=128):
    net = torchvision.models.resnet18(num_classes=dim)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    hidden = net.fc.weight.shape[1]
    net.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), net.fc)  # 512-512-128
    return net


class MoCo(nn.Module):
    def __init__(self, dim=128, queue_size=256, momentum=0.999, temperature=0.2, bn_groups=2):
        super().__init__()
        self.m, self.t, self.groups = momentum, temperature, bn_groups
        self.encoder_q = encoder(dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self):
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            k.mul_(self.m).add_(q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def _enqueue(self, keys):
        n, size = keys.shape[0], self.queue.shape[1]
        ptr = int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (ptr + n) % size

    def forward(self, im_q, im_k):
        groups = max(1, min(self.groups, im_q.shape[0] // 2))
        q = torch.cat([self.encoder_q(chunk) for chunk in im_q.chunk(groups)])
        q = F.normalize(q, dim=1)
        with torch.no_grad():
            self._momentum_update()
            shuffle = torch.randperm(im_k.shape[0], device=im_k.device)
            k = torch.cat([self.encoder_k(chunk) for chunk in im_k[shuffle].chunk(groups)])
            k = F.normalize(k, dim=1)[torch.argsort(shuffle)]
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.t
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits.float(), labels)
        self._enqueue(k)
        return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", action="append", help="manifest.csv (repeatable)")
    ap.add_argument("--comcl-db", help="read the images from this comcl index's image cache instead")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="CUDA autocast dtype (fp16 with a gradient scaler)")
    ap.add_argument("--synthetic", action="store_true",
                    help="no data path: one random batch already on the device (the compute-only ceiling)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--queue-size", type=int, default=256)
    ap.add_argument("--rotation", type=float, default=0.0,
                    help="RandomRotation degrees (0: none, as the engine's MoCo v2 preset)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.batch_size < 2 or args.steps < 1 or args.warmup < 0 or args.workers < 0:
        ap.error("need --batch-size >= 2, --steps >= 1, --warmup >= 0, --workers >= 0")
    if not args.manifest and not args.comcl_db:
        ap.error("give --manifest or --comcl-db")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    if autocast_dtype is not None and device.type != "cuda":
        ap.error("--precision bf16/fp16 needs a CUDA device")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    transform = view_transform(args.image_size, args.rotation)
    data = CacheImages(args.comcl_db, transform) if args.comcl_db else ManifestImages(args.manifest, transform)
    if len(data) < args.batch_size:
        ap.error(f"only {len(data)} images for batch size {args.batch_size}")
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         pin_memory=device.type == "cuda")
    model = MoCo(queue_size=args.queue_size).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.encoder_q.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler(enabled=args.precision == "fp16")
    fixed = None
    if args.synthetic:
        shape = (args.batch_size, 1, args.image_size, args.image_size)
        fixed = (torch.rand(shape, device=device), torch.rand(shape, device=device))

    batches = iter(loader)

    def next_batch():
        nonlocal batches
        if fixed is not None:
            return fixed
        try:
            return next(batches)
        except StopIteration:  # repeat the data set as often as needed
            batches = iter(loader)
            return next(batches)

    def step():
        wait_start = time.perf_counter()
        im_q, im_k = next_batch()
        im_q = im_q.to(device, non_blocking=True)
        im_k = im_k.to(device, non_blocking=True)
        waited = time.perf_counter() - wait_start
        if autocast_dtype is None:
            loss = model(im_q, im_k)
        else:
            with torch.autocast(device.type, dtype=autocast_dtype):
                loss = model(im_q, im_k)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return waited, loss.item()

    for _ in range(args.warmup):
        step()
    waited_total = 0.0
    started = time.perf_counter()
    for i in range(args.steps):
        waited, loss = step()
        waited_total += waited
        print(f"step {i + 1}/{args.steps} loss {loss:.4f}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started

    print(json.dumps({
        "side": "python",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "images": len(data),
        "workers": args.workers,
        "queue_size": args.queue_size,
        "seconds": round(seconds, 3),
        "images_per_second": round(args.steps * args.batch_size / seconds, 2),
        "data_wait_share": round(waited_total / seconds, 4),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "precision": args.precision,
        "data": "synthetic (on the device)" if args.synthetic else ("comcl cache" if args.comcl_db else "PNG"),
    }), flush=True)


if __name__ == "__main__":
    main()
