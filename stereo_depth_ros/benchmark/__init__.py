"""The measurement library behind `stereo_depth_bench`: configurations (`settings`), inputs
(`inputs`), one configuration timed in its own process (`worker`), the rounds and ratios across
configurations (`runner`) and the report (`report`). The engines' FLOP and convolution
throughput limits live beside the engines, in `models.fused.limits`."""
