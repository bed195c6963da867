"""The tools' shared fixtures: the small synthetic bags the replay tests read (each test module
that uses one builds it once)."""

from __future__ import annotations

import pytest

from helpers.replay_bags import lidar_bag_in, ros1_bag_in, ros2_bag_in


@pytest.fixture(scope="module")
def ros1_bag(tmp_path_factory):
    return ros1_bag_in(tmp_path_factory.mktemp("ros1"))


@pytest.fixture(scope="module")
def ros2_bag(tmp_path_factory):
    return ros2_bag_in(tmp_path_factory.mktemp("ros2"))


@pytest.fixture(scope="module")
def lidar_bag(tmp_path_factory):
    return lidar_bag_in(tmp_path_factory.mktemp("lidar"))
