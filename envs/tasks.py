"""What a task is: an instruction, the objects on the table, and the goals that define success.

A goal's object may be named directly ("red_block") or picked by where it is at reset
(`SpatialRef`, as in LIBERO-spatial's "the black bowl next to the plate"). Spatial references
are resolved once per episode from the initial layout, so the success predicate is about the
object the instruction meant, not whichever block happens to be leftmost later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from envs.objects import ObjectSpec

Relation = Literal["in", "on", "stack"]  # in the bowl / on the plate / on top of a block
SpatialRule = Literal["left", "middle", "right", "nearest"]


@dataclass(frozen=True)
class SpatialRef:
    """One of several identical objects, chosen by its place in the agent-view image."""

    candidates: tuple[str, ...]  # names of the look-alike objects to choose from
    rule: SpatialRule  # left / middle / right as seen from the agent view, or nearest anchor
    anchor: str = ""  # for "nearest": the object it must be next to

    def resolve(self, positions: dict[str, np.ndarray]) -> str:
        """Name of the object this reference denotes given body positions (world frame).

        The agent-view camera looks along -x with its image right along +y, so "left" in the
        image is the smallest y.
        """
        if self.rule == "nearest":
            anchor = positions[self.anchor][:2]
            return min(
                self.candidates, key=lambda n: float(np.linalg.norm(positions[n][:2] - anchor))
            )
        order = sorted(self.candidates, key=lambda n: float(positions[n][1]))
        index = {"left": 0, "middle": len(order) // 2, "right": len(order) - 1}[self.rule]
        return order[index]

    def margin(self, positions: dict[str, np.ndarray]) -> float:
        """How unambiguous the reference is (m): the gap between the chosen object and the
        runner-up. Layouts require a minimum so the instruction has one clear answer."""
        if self.rule == "nearest":
            anchor = positions[self.anchor][:2]
            d = sorted(float(np.linalg.norm(positions[n][:2] - anchor)) for n in self.candidates)
            return d[1] - d[0]
        ys = sorted(float(positions[n][1]) for n in self.candidates)
        return min(b - a for a, b in zip(ys[:-1], ys[1:]))


ObjectRef = str | SpatialRef


@dataclass(frozen=True)
class Goal:
    """One sub-goal: put `obj` in/on `dest`."""

    obj: ObjectRef  # the object to move (a name or a spatial reference)
    relation: Relation  # "in" a bowl, "on" a plate, or "stack" on another block
    dest: str  # name of the bowl, plate or block it must end up in/on


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite (the analogue of one LIBERO .bddl file plus its init file)."""

    suite: str  # spatial / object / goal / long
    task_id: int  # index within the suite
    instruction: str  # the prompt, LIBERO style ("put the red block in the bowl")
    objects: tuple[ObjectSpec, ...]  # every object in the scene (the suite's shared table)
    goals: tuple[Goal, ...]  # all must hold at once (long tasks chain two)
    max_steps: int  # episode length limit at 20 Hz (the suite's)
    num_init_states: int = 50  # fixed evaluation layouts, like LIBERO's 50 per task
    spatial_refs: tuple[SpatialRef, ...] = ()  # refs the suite uses; layouts keep all clear

    @property
    def env_id(self) -> str:
        return f"prunepi/{self.suite}-{self.task_id}"

    def object(self, name: str) -> ObjectSpec:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"object: {name!r} is not in task {self.env_id} ({self.object_names})")

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)

    def resolve_goals(self, positions: dict[str, np.ndarray]) -> tuple[Goal, ...]:
        """Goals with every spatial reference replaced by the object name it denotes."""
        return tuple(
            Goal(g.obj.resolve(positions), g.relation, g.dest)
            if isinstance(g.obj, SpatialRef)
            else g
            for g in self.goals
        )
