"""Full-size π0.5 (openpi's `pi05`) on CPU: build in bf16, save, reload strictly, sample.

Random weights in openpi's mixed precision (bf16 except the fp32 keep-list of
policies/pi05/model.py `FP32_KEEP`, after openpi `to_bfloat16_for_selected_params`). The
model is built on the meta device, then allocated with its final dtypes and initialised in
place, so no fp32 copy of the ~3.3 B parameters (13 GB) ever exists; only one full model is
alive at a time (the saved one is freed before the reload).

The body runs in a child process so that its peak memory and phase times are its own:
VmHWM (/proc/self/status) is reset before every phase through /proc/self/clear_refs
("5", Linux >= 4.0) and a sampler thread tracks the peak of RssAnon (the loader's mmap of
model.safetensors counts in VmHWM as file pages, not as heap).

    python benchmarks/pi05_cpu_full.py              # -> benchmarks/results/pi05_cpu_full.json
    python benchmarks/pi05_cpu_full.py --keep 78 --workdir /tmp/x --out X.json

tests/pi05/test_full_size.py (marker `slow`) runs the same body and asserts correctness only.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open

from policies.pi05.checkpoint import LM_HEAD_KEY, load_openpi_weights, save_openpi_weights
from policies.pi05.config import Pi05Config, pi05
from policies.pi05.model import Observation, Pi05Model
from policies.pruning.config import PrunerConfig

GIB = 1024**3
REPO = Path(__file__).resolve().parents[1]
_PG = "paligemma_with_expert.paligemma.model."
_EX = "paligemma_with_expert.gemma_expert.model."
# Compared bitwise between the saved and the reloaded model: the tied embedding (stored as
# lm_head in openpi's file), bf16 and fp32-keep-list tensors of each tower, top-level fp32.
SAMPLED_KEYS = (
    _PG + "language_model.embed_tokens.weight",
    _PG + "vision_tower.vision_model.embeddings.patch_embedding.weight",
    _PG + "vision_tower.vision_model.encoder.layers.13.mlp.fc1.weight",
    _PG + "multi_modal_projector.linear.weight",
    _PG + "language_model.layers.0.self_attn.q_proj.weight",
    _PG + "language_model.layers.17.mlp.down_proj.weight",
    _PG + "language_model.layers.9.input_layernorm.weight",
    _EX + "layers.9.post_attention_layernorm.dense.weight",
    _EX + "layers.9.mlp.up_proj.weight",
    _EX + "layers.4.self_attn.k_proj.weight",
    "action_out_proj.weight",
)


def full_config(keep_tokens: int = 78) -> Pi05Config:
    """openpi `pi05` in bf16 with the parameter-free LightVLA scorer keeping `keep_tokens`."""
    pruning = PrunerConfig(
        enabled=True, scorer="lightvla", budget="keep_tokens", keep_tokens=keep_tokens
    )
    return dataclasses.replace(pi05(), dtype="bfloat16", pruning=pruning)


def empty_model(cfg: Pi05Config) -> Pi05Model:
    """Uninitialised CPU model with its final (mixed) dtypes, never materialised in fp32.

    On the meta device `Pi05Model.__init__` (random init, bf16 cast) costs nothing; the
    dtypes it leaves are what `to_empty` allocates.
    """
    with torch.device("meta"):
        model = Pi05Model(cfg)
    return model.to_empty(device="cpu")


def build_random(cfg: Pi05Config, seed: int) -> Pi05Model:
    """Random weights (the model's own `reset_parameters`), drawn in place in their dtype."""
    model = empty_model(cfg)
    if model.pruner is not None and any(True for _ in model.pruner.parameters()):
        raise ValueError(f"only parameter-free scorers are supported, got {cfg.pruning.scorer}")
    torch.manual_seed(seed)
    model.reset_parameters()
    return model


def digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (bitwise identity), plus its dtype."""
    raw = t.detach().contiguous().view(-1).view(torch.uint8).numpy()
    return f"{t.dtype}:{hashlib.sha256(raw).hexdigest()}"


def full_observation(cfg: Pi05Config, prompt_len: int, seed: int) -> Observation:
    """Batch 1, every camera present (all 768 patch slots valid), `prompt_len` real tokens."""
    g = torch.Generator().manual_seed(seed)
    s, L = cfg.vision.image_size, cfg.max_token_len
    mask = (torch.arange(L) < prompt_len)[None]  # (1, L)
    tokens = torch.randint(1, cfg.vocab_size, (1, L), generator=g) * mask
    return Observation(
        images={c: torch.rand(1, 3, s, s, generator=g) * 2 - 1 for c in cfg.camera_names},
        image_masks={c: torch.ones(1, dtype=torch.bool) for c in cfg.camera_names},
        state=torch.zeros(1, cfg.action_dim),
        tokenized_prompt=tokens,
        tokenized_prompt_mask=mask,
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PhaseMeter:
    """Wall time, peak VmHWM and peak RssAnon of each phase, in GiB."""

    def __init__(self, interval_s: float = 0.02):
        self.rows: list[dict] = []
        self._anon_peak = 0
        self._stop = threading.Event()
        self._interval = interval_s
        self.hwm_resettable = self._reset_hwm()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _reset_hwm(self) -> bool:
        try:  # proc(5) clear_refs: "5" resets the peak RSS to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._anon_peak = max(self._anon_peak, _status_kib("RssAnon"))

    @contextmanager
    def phase(self, name: str):
        self._reset_hwm()
        self._anon_peak = _status_kib("RssAnon")
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        anon = max(self._anon_peak, _status_kib("RssAnon"))
        self.rows.append(
            {
                "phase": name,
                "seconds": seconds,
                "peak_rss_gib": _status_kib("VmHWM") / 1024**2,
                "peak_anon_gib": anon / 1024**2,
                "rss_end_gib": _status_kib("VmRSS") / 1024**2,
            }
        )
        print(f"[pi05_cpu_full] {name}: {seconds:.1f} s", self.rows[-1], flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _file_facts(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        dtypes: dict[str, int] = {}
        for k in f.keys():
            dt = str(f.get_slice(k).get_dtype())
            dtypes[dt] = dtypes.get(dt, 0) + 1
        has_lm_head = LM_HEAD_KEY in f.keys()
    return {"file_bytes": path.stat().st_size, "file_dtypes": dtypes, "lm_head_key": has_lm_head}


def _param_facts(model: Pi05Model) -> dict:
    by_dtype: dict[str, int] = {}
    for p in model.parameters():
        by_dtype[str(p.dtype)] = by_dtype.get(str(p.dtype), 0) + p.numel() * p.element_size()
    return {"params": sum(p.numel() for p in model.parameters()), "param_bytes": by_dtype}


def _sample_facts(model: Pi05Model, obs: Observation, noise: torch.Tensor, prune: bool) -> dict:
    out = model.sample(obs, noise, prune=prune)
    return {
        "kept_tokens": out.kept_tokens.tolist(),
        "total_tokens": out.total_tokens,
        "prefix_len": out.prefix_len,
        "actions_shape": list(out.actions.shape),
        "finite": bool(torch.isfinite(out.actions).all()),
        "actions": out.actions,  # dropped before JSON
    }


def _save_phase(cfg: Pi05Config, workdir: Path, seed: int, meter: PhaseMeter) -> dict:
    """Build, digest, save and free the random model; -> facts about it."""
    with meter.phase("build"):
        model = build_random(cfg, seed)
    facts = _param_facts(model)
    sd = model.state_dict()
    facts["digests_saved"] = {k: digest(sd[k]) for k in SAMPLED_KEYS}
    del sd
    with meter.phase("save"):
        path = save_openpi_weights(model, workdir)
    with meter.phase("free"):
        del model
        gc.collect()
    facts.update(_file_facts(path))
    return facts


def _load_phase(cfg: Pi05Config, workdir: Path, meter: PhaseMeter) -> tuple[Pi05Model, dict]:
    """A fresh model filled with NaN (so nothing can pass unloaded), loaded strictly."""
    with meter.phase("load"):
        model = empty_model(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        load_openpi_weights(model, workdir / "model.safetensors")
    model.eval()
    sd = model.state_dict()
    facts = {"digests_loaded": {k: digest(sd[k]) for k in SAMPLED_KEYS}}
    facts["nan_params_after_load"] = sum(int(p.isnan().any()) for p in model.parameters())
    return model, facts


def _sample_phases(model: Pi05Model, obs: Observation, noise: torch.Tensor, meter) -> dict:
    """Pruned then unpruned, each twice: the first call pays one-time kernel set-up, the
    second ("_warm") is the steady-state latency; same noise, so the repeat must agree."""
    out: dict = {}
    for suffix in ("", "_warm"):
        for run, prune in (("pruned", True), ("unpruned", False)):
            with meter.phase(f"sample_{run}{suffix}"):
                out[run + suffix] = _sample_facts(model, obs, noise, prune=prune)
    acts = {k: v.pop("actions") for k, v in out.items()}
    out["repeat_bitwise_equal"] = all(
        torch.equal(acts[run], acts[run + "_warm"]) for run in ("pruned", "unpruned")
    )
    diff = (acts["pruned"] - acts["unpruned"]).abs().max()
    out["max_abs_diff_pruned_vs_unpruned"] = float(diff)
    return out


def run_body(workdir: Path, keep_tokens: int = 78, seed: int = 0, prompt_len: int = 32) -> dict:
    """Build -> save -> free -> strict load -> sample pruned and unpruned, batch 1."""
    workdir = Path(workdir)
    cfg = full_config(keep_tokens)
    meter = PhaseMeter()
    result = {"keep_tokens": keep_tokens, "prompt_len": prompt_len, "seed": seed}
    result["hwm_reset_per_phase"] = meter.hwm_resettable
    result.update(_save_phase(cfg, workdir, seed, meter))
    model, facts = _load_phase(cfg, workdir, meter)
    result.update(facts)
    obs = full_observation(cfg, prompt_len, seed)
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn((1, cfg.action_horizon, cfg.action_dim), generator=g)
    result.update(_sample_phases(model, obs, noise, meter))
    meter.close()
    result["phases"] = meter.rows
    result["peak_rss_gib"] = max(r["peak_rss_gib"] for r in meter.rows)
    result["peak_anon_gib"] = max(r["peak_anon_gib"] for r in meter.rows)
    result["torch_threads"] = torch.get_num_threads()
    result["torch"] = torch.__version__
    result["cpu_model"] = cpu_model()
    return result


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def run_in_subprocess(
    workdir: Path, keep_tokens: int = 78, seed: int = 0, timeout_s: float = 3600
) -> dict:
    """`run_body` in a fresh interpreter (clean peak RSS); -> its result dict."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "result.json"
    cmd = [sys.executable, "-m", "benchmarks.pi05_cpu_full", "--child", "--workdir", str(workdir)]
    cmd += ["--keep", str(keep_tokens), "--seed", str(seed)]
    subprocess.run(cmd, cwd=REPO, check=True, timeout=timeout_s)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="pi05_cpu_full.json")
    ap.add_argument("--keep", type=int, default=78)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where model.safetensors goes (temp dir)")
    ap.add_argument("--child", action="store_true", help="internal: run the body here")
    args = ap.parse_args()
    if args.child:
        r = run_body(Path(args.workdir), args.keep, args.seed)
        (Path(args.workdir) / "result.json").write_text(json.dumps(r, indent=1))
        return
    from benchmarks.common import print_table, write_json

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        r = run_in_subprocess(Path(tmp), args.keep, args.seed)
    print_table(r["phases"], ["phase", "seconds", "peak_rss_gib", "peak_anon_gib", "rss_end_gib"])
    rows = [
        {"run": k, **{f: r[k][f] for f in ("kept_tokens", "prefix_len", "finite")}}
        for k in ("pruned", "unpruned")
    ]
    print_table(rows, ["run", "kept_tokens", "prefix_len", "finite"])
    print(
        f"params {r['params']}, file {r['file_bytes'] / GIB:.2f} GiB, peak RSS "
        f"{r['peak_rss_gib']:.2f} GiB (anon {r['peak_anon_gib']:.2f}), threads "
        f"{r['torch_threads']}, cpu {r['cpu_model']}"
    )
    sec = {row["phase"]: row["seconds"] for row in r["phases"]}
    ratio = sec["sample_pruned_warm"] / sec["sample_unpruned_warm"]
    r["warm_pruned_over_unpruned"] = ratio
    print(f"warm sample_actions, pruned / unpruned: {ratio:.2f}x")
    write_json(args.out, r)


if __name__ == "__main__":
    main()
