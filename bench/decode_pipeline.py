#!/usr/bin/python3
"""The decode + normalise + cache pipeline a Python user would write, for comparison with bench_decode.

Same work, same order: read the file (pydicom), decode the first frame, modality LUT and VOI window with
pydicom's own helpers (header window / VOI LUT; else a 0.5/99.5 percentile window), MONOCHROME1 inversion,
letterbox to SIZE x SIZE with Pillow's anti-aliased bilinear resize, quantise to 8 bits, write into a
numpy.memmap image cache. Uses Debian's python3-pydicom, python3-numpy and python3-pil.

usage: decode_pipeline.py --size 256 --passes 3 FILE...
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut


def normalise(ds, size, clip=0.005):
    pixels = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float32)
        lo, hi = float(values.min()), float(values.max())
        unit = (values - lo) / max(hi - lo, 1e-6)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
        width = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
        unit = (values - (center - 0.5)) / max(width - 1, 1e-6) + 0.5  # PS3.3 C.11.2.1.2.1
    else:
        lo, hi = np.percentile(values, [100 * clip, 100 * (1 - clip)])
        unit = (values - lo) / max(hi - lo, 1e-6)
    unit = np.clip(unit, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    height, width = unit.shape
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = Image.fromarray(unit, mode="F").resize((new_w, new_h), Image.BILINEAR)
    canvas = np.zeros((size, size), dtype=np.uint8)
    x0, y0 = (size - new_w) // 2, (size - new_h) // 2
    canvas[y0:y0 + new_h, x0:x0 + new_w] = np.clip(np.asarray(resized) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return canvas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = np.memmap(os.path.join(tmp, "cache.u8"), dtype=np.uint8, mode="w+",
                          shape=(len(args.files), args.size, args.size))
        best = 0.0
        for p in range(args.passes):
            decoded = skipped = 0
            megapixels = 0.0
            start = time.perf_counter()
            for i, path in enumerate(args.files):
                try:
                    ds = pydicom.dcmread(path)
                    cache[i] = normalise(ds, args.size)
                except Exception:  # undecodable here (e.g. JPEG 2000 without a plugin): skipped as in C++
                    skipped += 1
                    continue
                megapixels += int(ds.Rows) * int(ds.Columns) / 1e6
                decoded += 1
            cache.flush()
            seconds = time.perf_counter() - start
            rate = decoded / seconds
            best = max(best, rate)
            print(json.dumps({"impl": "python-pydicom-numpy-pillow", "pass": p, "images": decoded,
                              "skipped": skipped, "seconds": round(seconds, 4), "images_per_s": round(rate, 2),
                              "source_megapixels_per_s": round(megapixels / seconds, 2)}))
        print(f"best images/s: {best:.2f}")
        del cache


if __name__ == "__main__":
    main()
