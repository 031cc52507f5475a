"""MJCF for the tabletop: table, cameras, the floating parallel gripper and a list of objects.

The gripper is a free body. Six Cartesian position actuators (site transmission with a
`refsite` on a mocap body) pull a drive site at its centre of mass towards the mocap pose,
like a stiff spring-damper. Actions move the mocap body; the gripper follows it physically.
We tried the obvious design first, the gripper base *being* the mocap body: MuJoCo gives
mocap bodies zero velocity, so friction at the finger pads never drags a grasped object
upwards (it stays on the table while the gripper rises). With the actuator coupling the base
has real velocity, grasps hold through contact and friction alone, and the model has no
equality constraint (no welds anywhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.objects import ObjectSpec

CONTROL_HZ = 20  # LIBERO/robosuite control frequency
TIMESTEP = 0.002  # physics step (s)
N_SUBSTEPS = int(round(1.0 / (CONTROL_HZ * TIMESTEP)))  # 25 physics steps per action

HOME_POS = np.array([0.0, 0.0, 0.25])  # grip point at reset (m); identity quat = pointing down
# Box the commanded grip point is clipped to (m): the table is x in [-0.45, 0.45],
# y in [-0.6, 0.6] with its top at z = 0.
WORKSPACE_LOW = np.array([-0.3, -0.4, 0.005])
WORKSPACE_HIGH = np.array([0.3, 0.4, 0.4])
FINGER_OPEN = 0.045  # finger joint travel (m): opening up to 9 cm between the pads
FINGER_HALF_THICKNESS = 0.006
FINGER_Z_LOW = -0.024  # finger pad bottom relative to the grip point (m)
# The springs pull on a site at the gripper's centre of mass, this far above the grip point
# (m): a force there accelerates the gripper without tipping it.
DRIVE_Z = 0.05

_GRIPPER = f"""
<body name="gripper" pos="{HOME_POS[0]} {HOME_POS[1]} {HOME_POS[2]}" gravcomp="1">
  <freejoint name="gripper"/>
  <site name="eef" group="3" rgba="0 0 0 0" size="0.005"/>
  <site name="drive" pos="0 0 {DRIVE_Z}" group="3" rgba="0 0 0 0" size="0.005"/>
  <geom name="palm" type="box" size="0.025 0.062 0.012" pos="0 0 0.052" rgba="0.2 0.2 0.22 1"
        mass="0.4" class="gripper"/>
  <geom name="wrist" type="cylinder" size="0.022 0.03" pos="0 0 0.094" rgba="0.75 0.75 0.78 1"
        mass="0.1" class="gripper"/>
  <camera name="wrist" pos="0.065 0 0.05" xyaxes="0 1 0 -0.8 0 0.6" fovy="80"/>
  <body name="left_finger" gravcomp="1">
    <joint name="left_finger" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}" damping="2"
           armature="0.01"/>
    <geom name="left_pad" type="box" size="0.012 {FINGER_HALF_THICKNESS} 0.032"
          pos="0 {FINGER_HALF_THICKNESS} 0.008" rgba="0.85 0.85 0.88 1" mass="0.05"
          class="finger"/>
  </body>
  <body name="right_finger" gravcomp="1">
    <joint name="right_finger" type="slide" axis="0 1 0" range="-{FINGER_OPEN} 0" damping="2"
           armature="0.01"/>
    <geom name="right_pad" type="box" size="0.012 {FINGER_HALF_THICKNESS} 0.032"
          pos="0 -{FINGER_HALF_THICKNESS} 0.008" rgba="0.85 0.85 0.88 1" mass="0.05"
          class="finger"/>
  </body>
</body>
<body name="eef_target" mocap="true" pos="{HOME_POS[0]} {HOME_POS[1]} {HOME_POS[2] + DRIVE_Z}">
  <site name="eef_target" group="3" rgba="0 0 0 0" size="0.005"/>
</body>
"""

# Stiff translational and softer rotational springs from the drive site to the mocap target,
# critically damped for the gripper's 0.6 kg and ~3e-3 kg m^2 (explicit kv rather than
# `dampratio`, whose conversion differs between MuJoCo releases); then the two finger
# position actuators (targets in metres of joint travel).
_ACTUATORS = """
<actuator>
  <position name="x" site="drive" refsite="eef_target" gear="1 0 0 0 0 0" kp="3000" kv="85"
            forcerange="-80 80"/>
  <position name="y" site="drive" refsite="eef_target" gear="0 1 0 0 0 0" kp="3000" kv="85"
            forcerange="-80 80"/>
  <position name="z" site="drive" refsite="eef_target" gear="0 0 1 0 0 0" kp="3000" kv="85"
            forcerange="-80 80"/>
  <position name="rx" site="drive" refsite="eef_target" gear="0 0 0 1 0 0" kp="30" kv="0.3"
            forcerange="-6 6"/>
  <position name="ry" site="drive" refsite="eef_target" gear="0 0 0 0 1 0" kp="30" kv="0.3"
            forcerange="-6 6"/>
  <position name="rz" site="drive" refsite="eef_target" gear="0 0 0 0 0 1" kp="30" kv="0.3"
            forcerange="-6 6"/>
  <position name="left_finger" joint="left_finger" kp="300" ctrlrange="0 {open}"
            forcerange="-12 12"/>
  <position name="right_finger" joint="right_finger" kp="300" ctrlrange="-{open} 0"
            forcerange="-12 12"/>
</actuator>
""".replace("{open}", str(FINGER_OPEN))

_HEADER = """
<mujoco model="prunepi_tabletop">
  <!-- No skybox or textures: each costs about a millisecond per frame in software EGL. -->
  <compiler angle="radian"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="640" offheight="640"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <material name="table" rgba="0.62 0.48 0.33 1"/>
  </asset>
  <default>
    <geom friction="1.0 0.005 0.0001" solref="0.004 1"/>
    <default class="object"><geom condim="4" friction="1.0 0.01 0.0001"/></default>
    <default class="finger"><geom condim="4" friction="1.5 0.02 0.0001"/></default>
    <default class="gripper"><geom condim="3"/></default>
  </default>
  <worldbody>
    <light name="sun" pos="0.2 0.2 1.5" dir="-0.1 -0.1 -1" directional="true" castshadow="true"
           diffuse="0.6 0.6 0.6"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" rgba="0.28 0.3 0.33 1"/>
    <body name="table" pos="0 0 -0.025">
      <geom name="table" type="box" size="0.45 0.6 0.025" material="table"/>
      <geom name="table_leg" type="box" size="0.05 0.05 0.36" pos="0 0 -0.39"
            rgba="0.3 0.25 0.2 1"/>
    </body>
    <camera name="agentview" pos="0.40 0 0.55" xyaxes="0 1 0 -0.788 0 0.616" fovy="52"/>
""".replace("{timestep}", str(TIMESTEP))

_FOOTER = """
  <contact>
    <exclude body1="gripper" body2="left_finger"/>
    <exclude body1="gripper" body2="right_finger"/>
    <exclude body1="left_finger" body2="right_finger"/>
  </contact>
</mujoco>
"""


def build_scene_xml(objects: Sequence[ObjectSpec]) -> str:
    """Full MJCF text for a scene holding `objects` (all placed at the origin; a layout moves
    them through their free joints)."""
    names = [o.name for o in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"objects: duplicate names in {names}")
    bodies = "".join(o.mjcf() for o in objects)
    return _HEADER + _GRIPPER + bodies + "</worldbody>" + _ACTUATORS + _FOOTER
