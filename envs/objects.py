"""The tabletop objects: what they are, how big, and how each turns into MJCF.

Every object is a free body (like LIBERO's objects), so the gripper moves it only through
contact and friction. Containers (bowl, plate) are free too, but heavy, so a placed object
cannot drag them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# Colours (RGBA) named in instructions; kept saturated so they survive 64-px renders.
RED = (0.85, 0.12, 0.10, 1.0)
GREEN = (0.15, 0.65, 0.20, 1.0)
BLUE = (0.12, 0.30, 0.85, 1.0)
YELLOW = (0.95, 0.80, 0.10, 1.0)
ORANGE = (0.95, 0.50, 0.10, 1.0)
GREY_BOWL = (0.25, 0.25, 0.28, 1.0)
WHITE_PLATE = (0.92, 0.92, 0.88, 1.0)

Kind = Literal["box", "cylinder", "bowl", "plate"]

# Bowl geometry (a flat-bottomed bin of wall segments; LIBERO's bowls are meshes).
BOWL_RADIUS = 0.068  # wall centre-line radius (m)
BOWL_WALL = 0.004  # wall half-thickness (m)
BOWL_WALL_HALF_HEIGHT = 0.022  # (m)
BOWL_BOTTOM_HALF = 0.004  # bottom disc half-thickness (m)
BOWL_SEGMENTS = 12
PLATE_RADIUS = 0.07
PLATE_HALF = 0.006


@dataclass(frozen=True)
class ObjectSpec:
    """One object in a scene."""

    name: str  # MJCF body name, also the key used by goals and layouts
    kind: Kind  # box / cylinder (graspable) or bowl / plate (containers)
    label: str  # the words instructions use for it, e.g. "red block"
    size: tuple[float, ...] = ()  # half sizes: box (hx, hy, hz), cylinder (radius, half height)
    rgba: tuple[float, float, float, float] = RED  # colour
    mass: float = 0.06  # kg

    @property
    def graspable(self) -> bool:
        return self.kind in ("box", "cylinder")

    @property
    def footprint(self) -> float:
        """Radius of the disc the object covers on the table (layout separation)."""
        if self.kind == "box":
            return float(np.hypot(self.size[0], self.size[1]))
        if self.kind == "cylinder":
            return float(self.size[0])
        if self.kind == "bowl":
            return BOWL_RADIUS + BOWL_WALL
        return PLATE_RADIUS

    @property
    def rest_height(self) -> float:
        """Height of the body origin above the table when the object stands on it."""
        if self.kind == "box":
            return float(self.size[2])
        if self.kind == "cylinder":
            return float(self.size[1])
        if self.kind == "plate":
            return PLATE_HALF
        return 0.0  # the bowl's origin is at its base

    @property
    def half_height(self) -> float:
        """Half of the vertical extent of a graspable object."""
        return self.rest_height

    @property
    def top_height(self) -> float:
        """Height above the body origin of the surface other objects rest on."""
        if self.kind == "bowl":
            return 2.0 * BOWL_BOTTOM_HALF
        if self.kind == "plate":
            return PLATE_HALF
        return self.rest_height

    def mjcf(self) -> str:
        """The body's MJCF (placed at the origin; layouts move it through its free joint)."""
        rgba = " ".join(f"{c:.3f}" for c in self.rgba)
        head = f'<body name="{self.name}"><freejoint name="{self.name}"/>'
        if self.kind == "box":
            hx, hy, hz = self.size
            geoms = (
                f'<geom name="{self.name}" type="box" size="{hx} {hy} {hz}" rgba="{rgba}" '
                f'mass="{self.mass}" class="object"/>'
            )
        elif self.kind == "cylinder":
            r, hh = self.size
            geoms = (
                f'<geom name="{self.name}" type="cylinder" size="{r} {hh}" rgba="{rgba}" '
                f'mass="{self.mass}" class="object"/>'
            )
        elif self.kind == "plate":
            geoms = (
                f'<geom name="{self.name}" type="cylinder" size="{PLATE_RADIUS} {PLATE_HALF}" '
                f'rgba="{rgba}" mass="{self.mass}" class="object"/>'
            )
        else:
            geoms = _bowl_geoms(self.name, rgba, self.mass)
        return head + geoms + "</body>"


def _bowl_geoms(name: str, rgba: str, mass: float) -> str:
    """A disc and a ring of wall boxes; mass split so the bottom carries half."""
    wall_mass = 0.5 * mass / BOWL_SEGMENTS
    half_len = np.pi * BOWL_RADIUS / BOWL_SEGMENTS + BOWL_WALL  # overlap: no gaps at corners
    parts = [
        f'<geom name="{name}" type="cylinder" size="{BOWL_RADIUS + BOWL_WALL} {BOWL_BOTTOM_HALF}" '
        f'pos="0 0 {BOWL_BOTTOM_HALF}" rgba="{rgba}" mass="{0.5 * mass}" class="object"/>'
    ]
    z = 2.0 * BOWL_BOTTOM_HALF + BOWL_WALL_HALF_HEIGHT
    for k in range(BOWL_SEGMENTS):
        a = 2.0 * np.pi * k / BOWL_SEGMENTS
        x, y = BOWL_RADIUS * np.cos(a), BOWL_RADIUS * np.sin(a)
        parts.append(
            f'<geom name="{name}_wall{k}" type="box" '
            f'size="{BOWL_WALL} {half_len:.4f} {BOWL_WALL_HALF_HEIGHT}" '
            f'pos="{x:.4f} {y:.4f} {z:.4f}" euler="0 0 {a:.4f}" rgba="{rgba}" '
            f'mass="{wall_mass:.4f}" class="object"/>'
        )
    return "".join(parts)


def block(name: str, label: str, rgba: tuple[float, float, float, float]) -> ObjectSpec:
    """A 4 cm cube."""
    return ObjectSpec(name, "box", label, (0.02, 0.02, 0.02), rgba, 0.06)


def bowl(name: str = "bowl") -> ObjectSpec:
    return ObjectSpec(name, "bowl", "bowl", (), GREY_BOWL, 0.5)


def plate(name: str = "plate") -> ObjectSpec:
    return ObjectSpec(name, "plate", "plate", (), WHITE_PLATE, 0.4)
