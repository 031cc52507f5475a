"""The rollout tests share tests/serve/conftest.py's checkpoint, Ray and served app."""

from tests.serve.conftest import (  # noqa: F401  (re-exported fixtures)
    local_ray,
    reference_policy,
    served,
    tiny_checkpoint,
)
