"""The curve tests share tests/serve/conftest.py's tiny checkpoint and local Ray."""

from tests.serve.conftest import (  # noqa: F401  (re-exported fixtures)
    local_ray,
    tiny_checkpoint,
)
