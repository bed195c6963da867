"""KITTI raw OXTS packets (`oxts/data/NNNNNNNNNN.txt`): GPS/IMU values for Imu and NavSatFix.

Pure (numpy only). Each file is one line of 30 numbers (KITTI raw devkit `dataformat.txt`):
lat, lon (deg), alt (m), roll, pitch, yaw (rad), vn, ve, vf, vl, vu (m/s), ax, ay, az, af, al, au
(m/s^2), wx, wy, wz, wf, wl, wu (rad/s), pos_accuracy, vel_accuracy (m, m/s), navstat, numsats,
posmode, velmode, orimode. The f/l/u values are in the unit's own frame (x forward, y left,
z up), which is what sensor_msgs/Imu wants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereo_depth_ros.core.transforms import quaternion_from_rotation, rotation_from_rpy

OXTS_FIELDS = 30


class OxtsError(ValueError):
    """An OXTS file is missing or malformed."""


@dataclass(frozen=True)
class OxtsPacket:
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    roll: float
    pitch: float
    yaw: float
    linear_acceleration: tuple[float, float, float]      # af, al, au (m/s^2)
    angular_velocity: tuple[float, float, float]         # wf, wl, wu (rad/s)
    position_accuracy_m: float

    @property
    def orientation(self) -> tuple[float, float, float, float]:
        """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll) (yaw 0 = east, as KITTI defines)."""
        return quaternion_from_rotation(rotation_from_rpy(self.roll, self.pitch, self.yaw))


def parse_oxts_line(text: str, source: str = "<oxts>") -> OxtsPacket:
    """One OXTS line -> OxtsPacket; OxtsError naming `source` if it is not 30 numbers."""
    try:
        values = np.array([float(token) for token in text.split()], dtype=np.float64)
    except ValueError:
        raise OxtsError(f"{source}: not a line of numbers: {text.strip()[:60]!r}") from None
    if values.size != OXTS_FIELDS:
        raise OxtsError(f"{source}: expected {OXTS_FIELDS} numbers, got {values.size}")
    return OxtsPacket(latitude_deg=values[0], longitude_deg=values[1], altitude_m=values[2],
                      roll=values[3], pitch=values[4], yaw=values[5],
                      linear_acceleration=tuple(values[14:17]),
                      angular_velocity=tuple(values[20:23]), position_accuracy_m=values[23])


def read_oxts_packet(path: str | Path) -> OxtsPacket:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise OxtsError(f"{path}: cannot read OXTS packet ({exc.strerror})") from None
    return parse_oxts_line(text, source=str(path))
