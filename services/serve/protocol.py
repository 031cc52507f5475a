"""openpi's websocket wire format, decoded defensively; no Ray, no model code.

openpi (`src/openpi/serving/websocket_policy_server.py`, `packages/openpi-client/src/
openpi_client/msgpack_numpy.py`): binary msgpack frames; numpy arrays travel as
`{"__ndarray__": True, "data": bytes, "dtype": dtype.str, "shape": shape}`. openpi's
server sends a traceback as a TEXT frame on any error and closes with 1011; we do the same
for internal errors, and for bad input send one line naming the problem and close with a
code that says whose fault it was (`RequestError.code`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import numpy as np
from openpi_client import msgpack_numpy

# RFC 6455 close codes.
UNSUPPORTED_DATA = 1003  # a text frame where openpi expects binary msgpack
POLICY_VIOLATION = 1008  # malformed message or observation; bad API key
MESSAGE_TOO_BIG = 1009  # above ServeConfig.max_message_bytes
INTERNAL_ERROR = 1011  # a server bug (openpi's code for every error)

REFUSED_DTYPE_KINDS = ("O", "V", "c")  # object, void, complex: openpi's pack_array refuses them
MAX_NDIM = 8


class RequestError(ValueError):
    """The client sent something we refuse; `code` is the websocket close code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _checked_array(obj: dict) -> Any:
    """msgpack object_hook: validate an encoded ndarray/numpy scalar, then let
    openpi_client.msgpack_numpy.unpack_array build it."""
    if b"__ndarray__" in obj or b"__npgeneric__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
        except Exception as e:
            raise RequestError(
                POLICY_VIOLATION, f"ndarray dtype {obj.get(b'dtype')!r} is not a numpy dtype: {e}"
            ) from e
        if dtype.kind in REFUSED_DTYPE_KINDS or dtype.hasobject:
            raise RequestError(POLICY_VIOLATION, f"ndarray dtype {dtype.str!r} is refused")
    if b"__ndarray__" in obj:
        data, shape = obj.get(b"data"), obj.get(b"shape")
        if not isinstance(data, bytes):
            raise RequestError(
                POLICY_VIOLATION, f"ndarray data must be bytes, got {type(data).__name__}"
            )
        if (
            not isinstance(shape, list | tuple)
            or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and d >= 0 for d in shape)
        ):
            raise RequestError(POLICY_VIOLATION, f"ndarray shape {shape!r} is not a valid shape")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise RequestError(
                POLICY_VIOLATION,
                f"ndarray of shape {tuple(shape)} and dtype {dtype.str} needs "
                f"{math.prod(shape) * dtype.itemsize} bytes, got {len(data)}",
            )
    return msgpack_numpy.unpack_array(obj)


def decode_observation(data: bytes, max_bytes: int) -> dict[str, Any]:
    """One binary websocket frame -> observation dict, or RequestError naming the problem."""
    if len(data) > max_bytes:
        raise RequestError(
            MESSAGE_TOO_BIG, f"message is {len(data)} bytes, max_message_bytes is {max_bytes}"
        )
    try:
        obj = msgpack.unpackb(data, object_hook=_checked_array)
    except RequestError:
        raise
    except Exception as e:  # msgpack raises several types (ExtraData, StackError, ValueError)
        detail = "nested too deeply" if isinstance(e, msgpack.StackError) else str(e)
        raise RequestError(
            POLICY_VIOLATION, f"message is not msgpack-numpy: {type(e).__name__}: {detail}"
        ) from e
    return check_mapping(obj)


def check_mapping(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RequestError(
            POLICY_VIOLATION, f"observation must be a map (dict), got {type(obj).__name__}"
        )
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        raise RequestError(POLICY_VIOLATION, f"observation keys must be strings, got {bad[0]!r}")
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    return msgpack_numpy.packb(obj)


# Serve's HTTP proxy runs uvicorn with its default `ws_max_size` of 16 MiB: Ray 2.60 builds
# `uvicorn.Config` without it and HTTPOptions has no field for it (ray/serve/_private/
# http_util.py `start_asgi_http_server`). The websockets protocol there reads a frame's
# header and refuses (close 1009, no text frame) a frame or message longer than this before
# reading its payload. Smaller messages are assembled whole by the proxy and forwarded to the
# replica, where `decode_observation` applies ServeConfig.max_message_bytes.
PROXY_WS_MAX_BYTES = 16 * 1024 * 1024


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, max_bytes: int
) -> bytes:
    """An HTTP body, refused with MESSAGE_TOO_BIG as early as the request allows.

    A Content-Length above `max_bytes` is refused before one byte of the body is read;
    otherwise (chunked transfer, or a body longer than it said) the chunks are read one at a
    time and the read stops at the first chunk that takes the total past `max_bytes`, so at
    most `max_bytes` plus one chunk is held here.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(
                POLICY_VIOLATION, f"Content-Length must be an integer, got {content_length!r}"
            ) from None
        if declared > max_bytes:
            raise RequestError(
                MESSAGE_TOO_BIG,
                f"body is {declared} bytes (Content-Length), max_message_bytes is {max_bytes}",
            )
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(
                MESSAGE_TOO_BIG,
                f"body passed max_message_bytes ({max_bytes}) at {size} bytes; not read further",
            )
        parts.append(chunk)
    return b"".join(parts)


def from_json(body: bytes, max_bytes: int) -> dict[str, Any]:
    """A JSON observation (images as nested lists) -> the dict a websocket client sends.

    Integer arrays within [0, 255] become uint8 (images), other numeric arrays float32;
    strings stay strings.
    """
    import json

    if len(body) > max_bytes:
        raise RequestError(
            MESSAGE_TOO_BIG, f"body is {len(body)} bytes, max_message_bytes is {max_bytes}"
        )
    try:
        obj = check_mapping(json.loads(body))
    except RequestError:
        raise
    except (ValueError, RecursionError) as e:
        raise RequestError(POLICY_VIOLATION, f"body is not JSON: {e}") from e
    return {k: _json_value(k, v) for k, v in obj.items()}


def _json_value(key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return value
    try:
        arr = np.asarray(value)
    except (ValueError, RecursionError) as e:
        raise RequestError(POLICY_VIOLATION, f"{key} is not a rectangular array: {e}") from e
    if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8)
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float32)
    raise RequestError(
        POLICY_VIOLATION, f"{key} must be a numeric array, got values of dtype {arr.dtype}"
    )


def to_json(result: dict[str, Any]) -> dict[str, Any]:
    """numpy -> JSON types, recursively."""
    if isinstance(result, dict):
        return {k: to_json(v) for k, v in result.items()}
    if isinstance(result, np.ndarray | np.generic):
        return result.tolist()
    if isinstance(result, list | tuple):
        return [to_json(v) for v in result]
    return result


def close_reason(message: str) -> str:
    """Websocket close reasons are limited to 123 UTF-8 bytes."""
    return message.encode("utf-8")[:120].decode("utf-8", "ignore")
