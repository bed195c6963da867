"""How close the PSMNet engines are to this machine's limit: the network's convolution FLOPs and
the throughput of its most common 3-D convolution in every arithmetic the CPU runs
(`stereo_depth_bench --limits`)."""

from __future__ import annotations

import statistics
import time


def network_flops(height: int, width: int, max_disparity: int = 192) -> dict[str, float]:
    """Convolution FLOPs (2 x multiply-adds) of one frame, counted by torch's FlopCounterMode on
    meta tensors: the reference network's parts, and the fused engines' total (dres0's first
    convolution replaced by ImplicitCostConv's two 2-D convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stereo_depth_ros.models import build_psmnet
    from stereo_depth_ros.models.fused.cost_conv import ImplicitCostConv

    height, width = -(-height // 16) * 16, -(-width // 16) * 16
    model = build_psmnet("stackhourglass", max_disparity=max_disparity).eval().to("meta")
    levels, h4, w4 = max_disparity // 4, height // 4, width // 4

    def count(function) -> float:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            function()
        return float(counter.get_total_flops())

    image = torch.empty(1, 3, height, width, device="meta")
    features = torch.empty(1, 32, h4, w4, device="meta")
    volume = torch.empty(1, 64, levels, h4, w4, device="meta")
    first = model.dres0[0][0]
    implicit = ImplicitCostConv(torch.zeros(32, 64, 3, 3, 3), torch.zeros(32), levels)
    implicit.left_weight = implicit.left_weight.to("meta")
    implicit.right_weight = implicit.right_weight.to("meta")
    implicit.right_bias = implicit.right_bias.to("meta")
    parts = {"features": count(lambda: model.extract_features(image, image)),
             "cost_conv_reference": count(lambda: first(volume)),
             "cost_conv_fused": count(lambda: implicit.tables(features, features)),
             "cnn3d_after_cost_conv": count(lambda: model.aggregate(volume))}
    parts["cnn3d_after_cost_conv"] -= parts["cost_conv_reference"]
    parts["total_reference"] = (parts["features"] + parts["cost_conv_reference"]
                                + parts["cnn3d_after_cost_conv"])
    parts["total_fused"] = (parts["features"] + parts["cost_conv_fused"]
                            + parts["cnn3d_after_cost_conv"])
    return parts


def conv_throughput(height: int, width: int, max_disparity: int = 192, runs: int = 5
                    ) -> dict[str, dict]:
    """GFLOP/s of one 32->32 3x3x3 3-D convolution over the 1/4-resolution volume of a frame
    (the fused engine's most common layer), channels-last on oneDNN, in every arithmetic this
    CPU runs: the machine's limit for the 3-D network."""
    import torch

    from stereo_depth_ros.models.fused import cpu_features
    from stereo_depth_ros.models.fused.int8 import Int8Conv
    from stereo_depth_ros.models.fused.onednn import CHANNELS_LAST_3D, FoldedConv

    levels, h4, w4 = max_disparity // 4, -(-height // 16) * 4, -(-width // 16) * 4
    flops = 2.0 * 32 * 32 * 27 * levels * h4 * w4
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, levels, h4, w4, generator=generator).relu().contiguous(
        memory_format=CHANNELS_LAST_3D)
    weight = 0.05 * torch.randn(32, 32, 3, 3, 3, generator=generator)
    bias = torch.zeros(32)
    cpu = cpu_features.detect()
    variants = {"fp32": (FoldedConv(weight, bias, padding=1), x)}
    if cpu.onednn_bf16:
        variants["bf16"] = (FoldedConv(weight, bias, padding=1, dtype=torch.bfloat16),
                            x.bfloat16())
    if cpu.int8_vnni:
        int8 = Int8Conv.from_conv(FoldedConv(weight, bias, padding=1), nonnegative_input=True)
        variants["int8"] = (int8, x)                               # quantizes x every call
        variants["int8 (input already quantized)"] = (int8, int8.quantize(x))
    result = {}
    with torch.inference_mode():
        for name, (conv, tensor) in variants.items():
            conv(tensor)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                conv(tensor)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            result[name] = {"median_s": median, "gflops": flops / median / 1e9}
    return {"shape": [1, 32, levels, h4, w4], "gflop": flops / 1e9, "cpu": cpu.describe(),
            "arithmetic": result}
