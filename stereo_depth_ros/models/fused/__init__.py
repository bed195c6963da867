"""Inference engines that compute the reference PSMNet (`models.psmnet`) faster.

- `cpu.FastPSMNet`: the fused CPU engine (oneDNN, no cost volume, per-CPU arithmetic);
- `cuda.CudaPSMNet`: the CUDA engine (folded, channels-last, fp16/bf16, CUDA graphs).

Their pieces, one concern per module, each with its parity test: `folding` (BatchNorm into
convolutions), `onednn` (convolution wrappers), `int8`, `cost_conv` (dres0's first convolution
without the volume), `classifier` (the heads in slabs), `regression` (chunked soft-argmin),
`cpu_features` (what the CPU runs fast), `memory` (an opt-in allocator setting).
"""

from stereo_depth_ros.models.fused.cpu import ArithmeticPlan, FastPSMNet

__all__ = ["ArithmeticPlan", "FastPSMNet"]
