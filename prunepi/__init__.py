"""prunepi: π0.5 with a LightVLA-style visual-token pruner, trained, served and rolled out on
Ray. Packages: policies (model, pruner, policy), envs, services, tune; this package holds the
CLI and process defaults."""

from prunepi import env as _env  # noqa: F401  (sets Ray/MuJoCo/wandb defaults on import)
