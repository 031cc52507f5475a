"""Ray Serve's own entry points for the policy server: an application builder.

    serve run services.serve.app:app_builder checkpoint=/ckpt/2000 prune=false
    serve run services/serve/serve_config.example.yaml      # a `serve build`-style config
    serve deploy services/serve/serve_config.example.yaml   # onto a running cluster

Serve calls `app_builder(args)` with the `key=value` pairs of `serve run` (all strings) or
the `args:` mapping of a config file's application (YAML-typed), and deploys the Application
it returns (ray/serve/_private/api.py `call_user_app_builder_with_args_if_necessary`; Ray
Serve docs, "Pass Arguments to Applications"). With an import path the builder runs in the
`serve run` process; with a config file it runs on the cluster, so paths there must be
absolute. The args are the deployment fields of `ServeConfig`, parsed to its field types and
checked by `ServeConfig.validate`; what Serve itself decides (where the proxy listens, the
app's name, route and logging, which cluster) is refused here with the place to set it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.serve.config import ServeConfig

if TYPE_CHECKING:
    from ray.serve import Application

# ServeConfig fields that `prunepi serve` (launch.py) applies but a Serve config file or the
# `serve run` command line owns: field -> where to set it instead.
SERVE_OWNED = {
    "host": "the config file's http_options.host (or `serve start --http-host`)",
    "port": "the config file's http_options.port (or `serve start --http-port`)",
    "app_name": "the application's `name` (or `serve run --name`)",
    "route_prefix": "the application's `route_prefix` (or `serve run --route-prefix`)",
    "log_level": "the application's logging_config.log_level",
    "access_log": "the application's logging_config.enable_access_log",
    "startup_timeout_s": "nowhere: `serve run` and `serve status` report readiness",
    "address": "`serve run --address` (or RAY_ADDRESS)",
}
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
NONE_WORDS = ("none", "null", "")


def accepted_args() -> tuple[str, ...]:
    """The builder's keys: every ServeConfig field Serve does not own (new fields included)."""
    return tuple(f.name for f in dataclasses.fields(ServeConfig) if f.name not in SERVE_OWNED)


def _bad(key: str, rule: str, value: Any) -> ValueError:
    return ValueError(f"serve app arg `{key}` must be {rule}, got {value!r}")


def _scalar(key: str, value: Any, kind: type) -> Any:
    """`value` (a `serve run` string or a YAML scalar) as `kind`."""
    text = value.strip().lower() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text in TRUE_WORDS + FALSE_WORDS:
            return text in TRUE_WORDS
        raise _bad(key, f"a boolean ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})", value)
    if kind is str:
        if isinstance(value, str):
            return value
        raise _bad(key, "a string", value)
    if kind in (int, float) and not isinstance(value, bool):
        if isinstance(value, int | float) and (kind is float or isinstance(value, int)):
            return kind(value)
        if text is not None:
            try:
                return kind(text)
            except ValueError:
                pass
    raise _bad(key, f"{'an int' if kind is int else 'a number'}", value)


def _parse(key: str, value: Any, hint: Any) -> Any:
    """Parse one arg to the ServeConfig field type `hint` (X, or X | None)."""
    options = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in options
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        options = tuple(o for o in options if o is not type(None))
        hint = options[0] if len(options) == 1 else hint
    if hint in (bool, int, float, str):
        return _scalar(key, value, hint)
    if dataclasses.is_dataclass(hint) and hasattr(hint, "from_dict"):
        return _nested(key, value, hint)
    raise TypeError(
        f"ServeConfig.{key} has type {hint}, which app_builder cannot parse: give it a "
        f"bool, int, float or str type (or that | None), or a config dataclass with from_dict"
    )


def _nested(key: str, value: Any, kind: type) -> Any:
    """A nested config (e.g. `pruning`): a YAML mapping, or JSON text on `serve run`'s
    command line (`pruning='{"enabled": true, "keep_ratio": 0.5}'`)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise _bad(
                key, f"a mapping of {kind.__name__} fields (JSON on the command line)", value
            ) from e
    if not isinstance(value, dict):
        raise _bad(key, f"a mapping of {kind.__name__} fields", value)
    try:
        return kind.from_dict(value)
    except TypeError as e:  # an unknown field name
        names = ", ".join(f.name for f in dataclasses.fields(kind))
        raise _bad(key, f"a mapping of {kind.__name__} fields ({names})", value) from e


def config_from_args(args: dict[str, Any]) -> ServeConfig:
    """`serve run` / config-file args -> a validated ServeConfig (ValueError names the key)."""
    if not isinstance(args, dict):
        raise ValueError(f"serve app args must be a mapping, got {type(args).__name__}")
    accepted = accepted_args()
    for key in args:
        if key in SERVE_OWNED:
            raise ValueError(
                f"serve app arg `{key}` is set by Serve, not by the app: use {SERVE_OWNED[key]}"
            )
        if key not in accepted:
            raise ValueError(
                f"unknown serve app arg `{key}` (value {args[key]!r}); accepted: "
                f"{', '.join(accepted)}"
            )
    if "checkpoint" not in args:
        raise ValueError("serve app arg `checkpoint` is required: a checkpoint folder")
    hints = typing.get_type_hints(ServeConfig)
    values = {k: _parse(k, v, hints[k]) for k, v in args.items()}
    # Replicas run in Ray's worker folders, not here: hand them an absolute path.
    values["checkpoint"] = str(Path(values["checkpoint"]).expanduser().resolve())
    cfg = ServeConfig(**values)
    cfg.validate()
    return cfg


def app_builder(args: dict[str, Any]) -> Application:
    """Serve's application builder: args -> the bound PolicyDeployment application."""
    from services.serve.deployment import build_app  # imports Ray Serve

    return build_app(config_from_args(args))
