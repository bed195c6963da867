"""The ROS-free per-frame pipeline (see `stereo_pipeline`); `device` holds its GPU stages."""

from stereo_depth_ros.pipeline.stereo_pipeline import (FrameResult, PipelineOptions,
                                                       StereoPipeline)

__all__ = ["FrameResult", "PipelineOptions", "StereoPipeline"]
