"""Small quaternion / axis-angle helpers (MuJoCo's w-x-y-z quaternion convention).

LIBERO's state uses the axis-angle of the end-effector quaternion (robosuite's
`quat2axisangle`) and its OSC controller takes delta rotations as axis-angle vectors applied in
the world frame; these helpers implement exactly those two conversions plus what the floating
gripper needs to keep itself upright.
"""

from __future__ import annotations

import mujoco
import numpy as np


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, radians) -> unit quaternion [w, x, y, z]."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    quat = np.zeros(4)
    if angle < 1e-12:
        quat[0] = 1.0
        return quat
    mujoco.mju_axisAngle2Quat(quat, rotvec / angle, angle)
    return quat


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Unit quaternion [w, x, y, z] -> rotation vector with angle in [0, pi] (robosuite's
    `quat2axisangle` up to its x-y-z-w ordering)."""
    quat = np.asarray(quat, dtype=np.float64)
    if quat[0] < 0.0:  # q and -q are the same rotation; pick the one with angle <= pi
        quat = -quat
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b first, then a)."""
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out


def quat_conj(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return np.array([q[0], -q[1], -q[2], -q[3]])


def mat_to_quat(mat: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(mat, dtype=np.float64).reshape(9))
    return quat


def yaw_quat(yaw: float) -> np.ndarray:
    """Rotation about world z by `yaw` radians."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def quat_yaw(quat: np.ndarray) -> float:
    """Heading of a frame's x axis projected on the table plane (radians)."""
    w, x, y, z = np.asarray(quat, dtype=np.float64)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def wrap_angle(angle: float, period: float = 2.0 * np.pi) -> float:
    """Wrap into [-period/2, period/2); period pi/2 for a cube's four-fold symmetry."""
    return float((angle + period / 2.0) % period - period / 2.0)


def limit_tilt(quat: np.ndarray, max_tilt: float) -> np.ndarray:
    """Clamp how far a frame's z axis leans from world z, keeping its heading (yaw).

    Swing-twist decomposition about z: q = swing * twist; the twist (yaw) is kept and the
    swing's angle is capped. Keeps a policy from flipping the gripper palm into the table.
    """
    q = np.asarray(quat, dtype=np.float64)
    twist = np.array([q[0], 0.0, 0.0, q[3]])
    norm = np.linalg.norm(twist)
    twist = np.array([1.0, 0.0, 0.0, 0.0]) if norm < 1e-9 else twist / norm
    swing = quat_mul(q, quat_conj(twist))
    rotvec = quat_to_axis_angle(swing)
    angle = float(np.linalg.norm(rotvec))
    if angle <= max_tilt:
        return q / np.linalg.norm(q)
    swing = axis_angle_to_quat(rotvec * (max_tilt / angle))
    out = quat_mul(swing, twist)
    return out / np.linalg.norm(out)


def rotation_error(target_quat: np.ndarray, current_quat: np.ndarray) -> np.ndarray:
    """World-frame rotation vector r with target = exp(r) * current (what a delta-axis-angle
    action must command to reach the target)."""
    return quat_to_axis_angle(quat_mul(target_quat, quat_conj(current_quat)))
