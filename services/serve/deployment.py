"""The Ray Serve deployment: openpi's websocket protocol at "/", `GET /healthz`, `POST /infer`.

Differences from openpi's `websocket_policy_server.py`, on purpose:
- concurrent clients are micro-batched into one `Policy.infer_batch` forward (`@serve.batch`),
  where openpi runs `policy.infer` once per request and serves one request at a time (openpi
  issue #717);
- bad input gets one text frame naming the problem and a close code saying whose fault it was
  (protocol.py), not a traceback; the replica keeps serving everyone else;
- an optional API key is checked (openpi's client sends it, openpi's server ignores it).
The server knows the Policy only through `infer_batch`, `metadata` and `prune`.

No `from __future__ import annotations` here: Ray pickles the class by value when
`@serve.deployment` runs, so FastAPI resolves `WebSocket`/`Request` annotations from the
pickled globals, and every helper the class uses must be defined above it.
"""

import hmac
import logging
import time
import traceback
from dataclasses import dataclass

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve

from services.serve import protocol
from services.serve.config import ServeConfig

log = logging.getLogger(__name__)

app = FastAPI(title="prunepi policy server", docs_url=None, redoc_url=None)


@dataclass(frozen=True)
class Failure:
    """One request's error inside a batch (serve.batch returns one item per request)."""

    code: int  # websocket close code (protocol.py)
    message: str  # sent to the client as a text frame / JSON error


def _failure(e: BaseException) -> Failure:
    if isinstance(e, protocol.RequestError):
        return Failure(e.code, str(e))
    if isinstance(e, ValueError):  # policies.transforms.ObservationError and friends
        return Failure(protocol.POLICY_VIOLATION, f"{type(e).__name__}: {e}")
    log.exception("inference failed")
    return Failure(protocol.INTERNAL_ERROR, "".join(traceback.format_exception(e)))


async def _send_error(ws: WebSocket, failure: Failure) -> None:
    """A text frame naming the problem, then a close (openpi-client raises on text frames)."""
    try:
        await ws.send_text(failure.message)
        await ws.close(failure.code, protocol.close_reason(failure.message.splitlines()[-1]))
    except Exception:  # the client is already gone
        pass


@serve.deployment
@serve.ingress(app)
class PolicyDeployment:
    def __init__(self, cfg: ServeConfig):
        # imported in the replica, not by the driver
        from policies.loading import LoadOptions, load_policy
        from prunepi.env import set_torch_threads

        self.cfg = cfg
        threads = set_torch_threads(cfg.num_cpus_per_replica)
        # a prunepi or an openpi checkpoint folder (with the options it lacks)
        self.policy = load_policy(
            cfg.checkpoint, LoadOptions.of(cfg), device=cfg.device, prune=cfg.prune
        )
        # The policy's metadata, plus which replica answers this connection (a websocket
        # stays on one replica): how a client, or a test, tells replicas apart.
        replica = serve.get_replica_context().replica_tag
        self.metadata = {**self.policy.metadata, "replica": replica, "torch_threads": threads}
        self._infer_batch.set_max_batch_size(cfg.max_batch_size)
        self._infer_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    # ---- inference -------------------------------------------------------------------

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=1)
    async def _infer_batch(self, observations: list[dict]) -> list[dict | Failure]:
        # The forward runs on this replica's user-code event loop, on purpose: Ray Serve forms
        # the next batch as soon as the previous one is handed over, so a forward sent to a
        # thread leaves later requests in small batches queued behind it (and fights the
        # loop for the GIL); blocking here lets every request that arrives during a forward
        # join the next one. Serve's control loop runs on another thread and stays live.
        # Measured on 2 CPUs, 8 clients: mean batch 2.3 / 10 req/s in a thread, 8 / 33 here.
        return self._run_batch(observations)

    def _run_batch(self, observations: list[dict]) -> list[dict | Failure]:
        try:
            return self.policy.infer_batch(observations)
        except Exception as e:
            if len(observations) == 1:
                return [_failure(e)]
        # One bad observation fails the whole forward: answer each request on its own
        # (noise is seeded per request, so good requests get the same actions).
        return [self._run_one(obs) for obs in observations]

    def _run_one(self, obs: dict) -> dict | Failure:
        try:
            return self.policy.infer_batch([obs])[0]
        except Exception as e:
            return _failure(e)

    # ---- access ----------------------------------------------------------------------

    def _authorized(self, headers) -> bool:
        if self.cfg.api_key is None:
            return True
        want = f"Api-Key {self.cfg.api_key}"  # openpi-client's header format
        return hmac.compare_digest(headers.get("authorization", "").encode(), want.encode())

    # ---- routes ----------------------------------------------------------------------

    @app.get("/healthz")
    def healthz(self) -> Response:
        return PlainTextResponse("OK\n")  # openpi's `_health_check` body

    @app.post("/infer")
    async def infer_json(self, request: Request) -> Response:
        if not self._authorized(request.headers):
            return JSONResponse({"error": "missing or wrong Authorization: Api-Key"}, 401)
        t0 = time.monotonic()
        try:
            # Refused on Content-Length before the body is read, else chunk by chunk as the
            # replica pulls it from the proxy (protocol.read_body). Serve's proxy queues what
            # the client sends without a bound until this answer ends the request
            # (ray/serve/_private/proxy.py `proxy_asgi_receive`), so the proxy may hold more.
            body = await protocol.read_body(
                request.stream(), request.headers.get("content-length"), self.cfg.max_message_bytes
            )
            obs = protocol.from_json(body, self.cfg.max_message_bytes)
        except protocol.RequestError as e:
            status = 413 if e.code == protocol.MESSAGE_TOO_BIG else 400
            return JSONResponse({"error": str(e)}, status)
        result = await self._infer_batch(obs)
        if isinstance(result, Failure):
            status = 500 if result.code == protocol.INTERNAL_ERROR else 400
            return JSONResponse({"error": result.message}, status)
        result["server_timing"] = {"infer_ms": (time.monotonic() - t0) * 1000}
        return JSONResponse(protocol.to_json(result))

    @app.websocket("/")
    async def websocket(self, ws: WebSocket) -> None:
        if not self._authorized(ws.headers):
            if "websocket.http.response" in (ws.scope.get("extensions") or {}):
                await ws.send_denial_response(
                    PlainTextResponse("missing or wrong Authorization: Api-Key\n", 401)
                )
                return
            await ws.accept()
            # Refused before the metadata frame; openpi-client raises ConnectionClosedError
            # with this code and reason.
            await ws.close(protocol.POLICY_VIOLATION, "missing or wrong Authorization: Api-Key")
            return
        await ws.accept()
        try:
            await self._serve_connection(ws)
        except WebSocketDisconnect:
            pass
        except Exception as e:  # a bug here must not take the replica down
            await _send_error(ws, _failure(e))

    async def _serve_connection(self, ws: WebSocket) -> None:
        # Mirrors openpi's WebsocketPolicyServer._handler.
        await ws.send_bytes(protocol.encode(self.metadata))
        prev_total_time = None
        while True:
            start_time = time.monotonic()
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                await _send_error(
                    ws,
                    Failure(protocol.UNSUPPORTED_DATA, "expected a binary msgpack frame, got text"),
                )
                return
            try:
                # A frame reaches us whole: the proxy's uvicorn assembled it, refusing on
                # the frame header only those above protocol.PROXY_WS_MAX_BYTES (16 MiB, not
                # configurable in Serve). max_message_bytes is applied here, after that.
                obs = protocol.decode_observation(data, self.cfg.max_message_bytes)
            except protocol.RequestError as e:
                await _send_error(ws, _failure(e))
                return
            infer_time = time.monotonic()
            result = await self._infer_batch(obs)
            infer_time = time.monotonic() - infer_time
            if isinstance(result, Failure):
                await _send_error(ws, result)
                return
            result["server_timing"] = {"infer_ms": infer_time * 1000}
            if prev_total_time is not None:
                result["server_timing"]["prev_total_ms"] = prev_total_time * 1000
            await ws.send_bytes(protocol.encode(result))
            prev_total_time = time.monotonic() - start_time


def build_app(cfg: ServeConfig):
    """The bound Serve application for `cfg` (replicas, CPUs/GPUs, connection limit)."""
    return PolicyDeployment.options(
        num_replicas=cfg.num_replicas,
        max_ongoing_requests=cfg.max_connections_per_replica,
        ray_actor_options={
            "num_cpus": cfg.num_cpus_per_replica,
            "num_gpus": cfg.num_gpus_per_replica,
        },
    ).bind(cfg)
