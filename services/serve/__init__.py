"""Ray Serve policy server speaking openpi's websocket protocol (see deployment.py)."""

from services.serve.config import ServeConfig
from services.serve.launch import ServeHandle, run_serve, start_serve

__all__ = ["ServeConfig", "ServeHandle", "run_serve", "start_serve"]
