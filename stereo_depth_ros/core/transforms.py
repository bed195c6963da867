"""Rigid transforms, quaternions and a static transform tree (the part of tf2 a LiDAR check needs).

Pure (numpy only). Conventions are tf2's:

* A transform `T_a_b` is a (4, 4) float64 matrix that maps points given in frame b into frame a:
  p_a = T_a_b @ [p_b, 1].
* A geometry_msgs/TransformStamped with `header.frame_id = parent` and `child_frame_id = child`
  holds T_parent_child (the child's pose in the parent), translation in metres and the rotation as
  a unit quaternion (x, y, z, w).

`static_transforms_from_message` reads a tf2_msgs/TFMessage by attribute names only, so rclpy
and `rosbags` messages both work without importing either.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

#: Largest deviation from orthonormality accepted for a rotation matrix (calibration files carry
#: 6-7 significant digits).
ROTATION_TOLERANCE = 1e-4


def rigid(rotation: np.ndarray, translation) -> np.ndarray:
    """(4, 4) float64 transform from a (3, 3) rotation and a 3-vector translation (metres)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    matrix[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return matrix


def invert_rigid(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: T_b_a from T_a_b."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rotation = matrix[:3, :3]
    return rigid(rotation.T, -rotation.T @ matrix[:3, 3])


def check_rotation(rotation: np.ndarray, what: str) -> np.ndarray:
    """The (3, 3) rotation as float64; ValueError naming `what` when it is not a proper rotation
    (orthonormal within ROTATION_TOLERANCE, determinant +1)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3) or not np.all(np.isfinite(rotation)):
        raise ValueError(f"{what}: expected a finite 3x3 rotation, got shape {rotation.shape}")
    deviation = float(np.abs(rotation @ rotation.T - np.eye(3)).max())
    determinant = float(np.linalg.det(rotation))
    if deviation > ROTATION_TOLERANCE or determinant < 0:
        raise ValueError(f"{what}: not a rotation matrix (|R R^T - I| = {deviation:.2g}, "
                         f"det = {determinant:.6g})")
    return rotation


def quaternion_from_rotation(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a (3, 3) rotation, w >= 0 (Shepperd's method; the
    rotation is re-orthonormalised first so calibration round-off gives a unit quaternion)."""
    u, _, vt = np.linalg.svd(np.asarray(rotation, dtype=np.float64))
    r = u @ vt
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        w, x, y, z = 0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, \
            (r[1, 0] - r[0, 1]) / s
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        w, x, y, z = (r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, \
            (r[0, 2] + r[2, 0]) / s
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        w, x, y, z = (r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, \
            (r[1, 2] + r[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        w, x, y, z = (r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, \
            (r[1, 2] + r[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def rotation_from_quaternion(x: float, y: float, z: float, w: float,
                             what: str = "quaternion") -> np.ndarray:
    """(3, 3) rotation of a quaternion (normalised first); ValueError naming `what` for a zero or
    non-finite one."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"{what}: not a rotation quaternion (x, y, z, w) = {tuple(q)}")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll), angles in radians (KITTI OXTS, REP 103 fixed axes)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class StaticTransform:
    """One edge of the tree: `matrix` is T_parent_child ((4, 4) float64)."""

    parent: str
    child: str
    matrix: np.ndarray

    @property
    def translation(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.matrix[:3, 3])

    @property
    def quaternion(self) -> tuple[float, float, float, float]:
        """(x, y, z, w)."""
        return quaternion_from_rotation(self.matrix[:3, :3])


def static_transforms_from_message(msg, source: str = "TFMessage") -> list[StaticTransform]:
    """The transforms of a tf2_msgs/TFMessage (rclpy or rosbags object, read by attribute)."""
    out = []
    for index, item in enumerate(msg.transforms):
        parent = item.header.frame_id.lstrip("/")
        child = item.child_frame_id.lstrip("/")
        what = f"{source} transforms[{index}] ({parent} -> {child})"
        if not parent or not child or parent == child:
            raise ValueError(f"{what}: needs two different, non-empty frame ids")
        t, r = item.transform.translation, item.transform.rotation
        rotation = rotation_from_quaternion(r.x, r.y, r.z, r.w, what=f"{what} rotation")
        translation = np.array([t.x, t.y, t.z], dtype=np.float64)
        if not np.all(np.isfinite(translation)):
            raise ValueError(f"{what}: translation is not finite: {tuple(translation)}")
        out.append(StaticTransform(parent, child, rigid(rotation, translation)))
    return out


class TransformLookupError(LookupError):
    """No chain of static transforms joins the two frames."""


class TransformTree:
    """Static transforms by child frame (as tf2: each frame has one parent; a later transform
    for the same child replaces the earlier one), with chain lookups between any two frames."""

    def __init__(self, transforms=()) -> None:
        self._edges: dict[str, StaticTransform] = {}
        self._chains: dict[tuple[str, str], np.ndarray] = {}    # lookups since the last add
        self.add_all(transforms)

    def add(self, transform: StaticTransform) -> None:
        self._edges[transform.child] = transform
        self._chains.clear()

    def add_all(self, transforms) -> None:
        for transform in transforms:
            self.add(transform)

    def __len__(self) -> int:
        return len(self._edges)

    def frames(self) -> set[str]:
        return {t.child for t in self._edges.values()} | {t.parent for t in self._edges.values()}

    def edges(self) -> list[StaticTransform]:
        return list(self._edges.values())

    def lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source: maps points in `source` into `target` along the chain of static
        transforms (either direction along each edge). TransformLookupError names both frames
        and the transforms known."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        if (target, source) not in self._chains:
            self._chains[(target, source)] = self._chain(target, source)
        return self._chains[(target, source)].copy()

    def _chain(self, target: str, source: str) -> np.ndarray:
        neighbours: dict[str, list[tuple[str, np.ndarray]]] = {}
        for edge in self._edges.values():
            # moving child -> parent applies T_parent_child; parent -> child its inverse
            neighbours.setdefault(edge.child, []).append((edge.parent, edge.matrix))
            neighbours.setdefault(edge.parent, []).append((edge.child,
                                                           invert_rigid(edge.matrix)))
        reached = {source: np.eye(4)}            # frame -> T_frame_source
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            for other, step in neighbours.get(frame, ()):
                if other not in reached:
                    reached[other] = step @ reached[frame]
                    if other == target:
                        return reached[other]
                    queue.append(other)
        known = ", ".join(f"{e.parent}->{e.child}" for e in self._edges.values()) or "none"
        raise TransformLookupError(f"no static transform chain from {source!r} to {target!r} "
                                   f"(transforms known: {known})")
