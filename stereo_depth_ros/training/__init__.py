"""PSMNet training, one concern per module; `stereo_depth_train` (tools/train.py) is the front end.

    recipe        the official schedules as presets (SceneFlow pre-training, KITTI 2015
                  fine-tuning)
    loss          loss masks and the weighted smooth-L1 of the official scripts
    data          random crops (normalised as the official weights expect)
    sampling      which samples each process trains on, in which order, epoch by epoch
    precision     fp32 / bf16 / fp16 autocast (and the GradScaler fp16 needs)
    distributed   torchrun process groups, all-reduce helpers, replica fingerprints
    loop          one epoch of optimiser steps (micro-batches, DDP), validation
    checkpoint    official-layout checkpoints with the state a resume needs
    progress      terminal progress with throughput and ETA
    summaries     the JSON log and the optional TensorBoard summaries
    runner        one training run from the command line's options: checks, devices, the
                  epochs or the throughput benchmark (what `stereo_depth_train` calls)

Only torch, numpy, cv2 and the stdlib are imported (tensorboard optionally), never ROS.
"""
