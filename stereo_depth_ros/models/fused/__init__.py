"""Inference engines that compute the reference PSMNet (`models.psmnet`) faster.

One concern per module: `folding` (BatchNorm into convolutions), `regression` (chunked
soft-argmin), `cuda` (the CUDA engine: folded, channels-last, reduced precision, CUDA graphs).
"""
