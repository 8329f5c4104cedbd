"""Benchmark detector training on CPU: steps/s, achieved GFLOP/s against the peak, peak RSS.

Usage: TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/training.py [--variants cpu unet-bce ...] [--steps 3]

For every configuration (own process, so peak RSS is its own): the compiled detector training
step on batch x crop_shape of the cpu preset; for "cpu" also the VAE step and the SuperMix sample
generation (SLIC + VAE reconstruction per crop), and an estimate of the whole cpu-preset training
time. Training FLOPs = 3 x forward FLOPs (forward + two backward products), counted analytically.
The siamese Table 1 variants share one architecture (they differ in L2 and gamma only), so
"cpu" stands for all four. The peak is the FP32 peak of the CPU it runs on
(``_common.cpu_description``). Writes benchmarks/results/training.json (``--name`` for another name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, cpu_description, machine, write_results  # noqa: E402

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = ["cpu", "unet-bce", "unet-ag-ms-ds", "unet-inc-ag-ms-ds"]


def _brain(shape, seed=0):
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.9
    image = np.clip(0.45 + 0.6 * gaussian_filter(rng.standard_normal(shape), 2.0), 0, 1) * mask
    return image.astype(np.float32), mask


def _child(name: str, steps: int) -> dict:
    import resource

    import numpy as np

    from bids_lesionchange.model.detector import forward_flops
    from bids_lesionchange.params import PRESETS
    from bids_lesionchange.model.training import DetectorTrainer
    from bids_lesionchange.model.variants import variant_params

    hyper = PRESETS["cpu"]
    if name != "cpu":
        hyper = replace(hyper, detector=variant_params(name, hyper.detector))
    training = hyper.training
    result = {"config": name, "crop_shape": list(training.crop_shape), "batch_size": training.batch_size}
    trainer = DetectorTrainer(hyper)
    rng = np.random.default_rng(0)
    shape = (training.batch_size, *training.crop_shape)
    reference = rng.uniform(0.2, 0.7, shape).astype(np.float32)
    label = (rng.uniform(size=shape) > 0.98).astype(np.float32)
    mixed = np.where(label > 0, 0.9, reference).astype(np.float32)
    began = time.perf_counter()
    trainer.train_step(mixed, reference, label)
    result["first_step_seconds"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(mixed, reference, label)
    step = (time.perf_counter() - began) / steps
    flops = 3 * forward_flops(hyper.detector, training.crop_shape) * training.batch_size
    result.update({
        "parameters": int(trainer.model.count_params()), "step_seconds": round(step, 3),
        "steps_per_s": round(1 / step, 3), "gflop_per_step": round(flops / 1e9, 1),
        "gflops_per_s": round(flops / 1e9 / step, 1), "fraction_of_peak": round(flops / 1e9 / step / cpu_description()["fp32_peak_gflops"], 3),
    })
    if name == "cpu":
        from bids_lesionchange.model.vae import VAE
        from bids_lesionchange.synth.crops import PairVolumes, synthetic_change_sample

        vae = VAE(hyper.vae)
        crops = np.stack([_brain(hyper.vae.crop_shape, s)[0] for s in range(hyper.vae.batch_size)])
        vae.train_step(crops)
        began = time.perf_counter()
        for _ in range(steps * 3):
            vae.train_step(crops)
        vae_step = (time.perf_counter() - began) / (steps * 3)
        image, mask = _brain((144, 176, 144))
        pair = PairVolumes("bench", baseline=image, followup=image, brain_mask=mask)
        synthetic_change_sample(pair, training.crop_shape, vae.reconstruct, rng, hyper.supermix)
        began = time.perf_counter()
        for _ in range(6):
            synthetic_change_sample(pair, training.crop_shape, vae.reconstruct, rng, hyper.supermix,
                                    min_brain_fraction=training.min_brain_fraction)
        sample = (time.perf_counter() - began) / 6
        vae_steps = hyper.vae.iterations * max(hyper.vae.crops_per_iteration // hyper.vae.batch_size, 1)
        det_steps = training.iterations * max(training.pairs_per_iteration // training.batch_size, 1)
        validation = training.iterations * training.validation_crops * (sample + step / 3)
        estimate = vae_steps * vae_step + det_steps * (step + training.batch_size * sample) + validation + 60
        result.update({
            "vae_step_seconds": round(vae_step, 3), "supermix_sample_seconds": round(sample, 3),
            "vae_steps": vae_steps, "detector_steps": det_steps,
            "estimated_cpu_preset_training_minutes": round(estimate / 60, 1),
        })
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="training", help="results file name (results/NAME.json)")
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(_child(opts.child, opts.steps)))
        return
    results = []
    for name in opts.variants:
        cmd = [sys.executable, __file__, "--child", name, "--steps", str(opts.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(out))
        print(json.dumps(results[-1]), flush=True)
    host = machine()
    write_results(opts.name, {"command": command_line(), "machine": host,
                               "peak_gflops": host["cpu"]["fp32_peak_gflops"],
                               "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "results": results})


if __name__ == "__main__":
    main()
