"""Speed of the MuJoCo tabletop suites and success of their scripted experts.

1. Env steps/s with both cameras rendering through headless EGL (on a machine without a GPU
   that is Mesa's software rasteriser), per image size, plus physics alone; and, for one
   config, shadow maps + multisampling on vs off side by side (why the env turns them off).
2. Per task: the scripted expert's success rate and mean episode length over the fixed
   evaluation init states (the expert reads privileged state, so images are rendered small).

    python benchmarks/env_speed.py                 # writes benchmarks/results/env_speed.json
    python benchmarks/env_speed.py --episodes 10   # quicker expert pass
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

import argparse  # noqa: E402
import time  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from benchmarks.common import print_table, write_json  # noqa: E402
from envs.demos import record_expert_episode  # noqa: E402
from envs.experts import make_expert  # noqa: E402
from envs.scene import N_SUBSTEPS  # noqa: E402
from envs.tabletop_env import TabletopEnv  # noqa: E402

SPEED_TASK = ("goal", 0)


def _rates(step, steps: int, repeats: int) -> list[float]:
    """Calls per second of `step` in `repeats` bursts of `steps` calls. On a shared machine the
    best burst is the least disturbed one, so tables report the best and the median."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def _row(config: str, step_rates: list[float], **extra) -> dict:
    best = max(step_rates)
    return {
        "config": config,
        "steps_per_s": best,
        "steps_per_s_median": float(np.median(step_rates)),
        "step_ms": 1e3 / best,
        **extra,
    }


def steps_per_second(image_size: int, shadows: bool, steps: int, repeats: int) -> dict:
    """Full env.step (physics + both cameras + state) with seeded random actions."""
    env = TabletopEnv(*SPEED_TASK, image_size=image_size, shadows=shadows)
    rng = np.random.default_rng(0)
    try:
        env.reset(seed=0)

        def step():
            if env.step(rng.uniform(-1, 1, 7))[2]:
                env.reset()

        for _ in range(3):  # warm up the GL context
            step()
        step_rates = _rates(step, steps, repeats)
        frame_rates = _rates(lambda: env._render_camera("agentview"), steps, repeats)
    finally:
        env.close()
    return _row(
        f"{image_size}px, shadows {'on' if shadows else 'off'}",
        step_rates,
        image_size=image_size,
        shadows=shadows,
        frame_ms=1e3 / max(frame_rates),
    )


def physics_only(steps: int, repeats: int) -> dict:
    """The 25 physics substeps of one control step, nothing else."""
    env = TabletopEnv(*SPEED_TASK, image_size=16)
    try:
        env.reset(seed=0)
        rates = _rates(
            lambda: mujoco.mj_step(env.model, env.data, nstep=N_SUBSTEPS), steps, repeats
        )
    finally:
        env.close()
    return _row("physics only", rates)


def expert_rows(episodes: int) -> list[dict]:
    rows = []
    for suite, tasks in envs.SUITES.items():
        for task in tasks:
            env = envs.make(suite, task.task_id, image_size=32)
            expert = make_expert(env)
            n = min(episodes, env.unwrapped.num_init_states)
            t0 = time.perf_counter()
            try:
                demos = [
                    record_expert_episode(env, expert, init_state_id=k, encode=False)
                    for k in range(n)
                ]
            finally:
                env.close()
            rows.append(
                {
                    "suite": suite,
                    "task_id": task.task_id,
                    "task": task.instruction,
                    "episodes": n,
                    "success_rate": float(np.mean([d.success for d in demos])),
                    "episode_length_mean": float(np.mean([d.length for d in demos])),
                    "episode_length_max": int(max(d.length for d in demos)),
                    "max_steps": task.max_steps,
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(f"  {task.env_id}: {rows[-1]['success_rate']:.2f}", flush=True)
    return rows


def suite_rows(rows: list[dict]) -> list[dict]:
    out = []
    for suite in envs.SUITES:
        mine = [r for r in rows if r["suite"] == suite]
        out.append(
            {
                "suite": suite,
                "tasks": len(mine),
                "episodes": sum(r["episodes"] for r in mine),
                "success_rate": float(np.mean([r["success_rate"] for r in mine])),
                "min_task_success": min(r["success_rate"] for r in mine),
                "episode_length_mean": float(np.mean([r["episode_length_mean"] for r in mine])),
                "max_steps": mine[0]["max_steps"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="env_speed.json")
    ap.add_argument("--steps", type=int, default=100, help="steps per timed burst")
    ap.add_argument("--repeats", type=int, default=5, help="timed bursts per config")
    ap.add_argument("--shadow-steps", type=int, default=10, help="steps per burst, shadows on")
    ap.add_argument("--episodes", type=int, default=50, help="expert episodes per task")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    args = ap.parse_args()

    load = os.getloadavg()[0]
    speed = [physics_only(args.steps, args.repeats)]
    speed += [steps_per_second(s, False, args.steps, args.repeats) for s in args.sizes]
    speed.append(steps_per_second(224, True, args.shadow_steps, args.repeats))
    print(f"best of {args.repeats} bursts (1-min load average at start: {load:.1f})")
    print_table(speed, ["config", "steps_per_s", "steps_per_s_median", "step_ms", "frame_ms"])
    print()
    print(f"expert: {args.episodes} evaluation init states per task")
    tasks = expert_rows(args.episodes)
    print_table(tasks, ["suite", "task_id", "success_rate", "episode_length_mean", "max_steps"])
    print()
    suites = suite_rows(tasks)
    print_table(suites, ["suite", "episodes", "success_rate", "episode_length_mean", "max_steps"])
    write_json(
        args.out,
        {
            "render_backend": os.environ.get("MUJOCO_GL"),
            "load_average_1min": load,
            "speed_note": "steps_per_s is the best of the timed bursts (shared machine)",
            "speed_task": "prunepi/{}-{}".format(*SPEED_TASK),
            "speed": speed,
            "expert_tasks": tasks,
            "expert_suites": suites,
        },
    )


if __name__ == "__main__":
    main()
