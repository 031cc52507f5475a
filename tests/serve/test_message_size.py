"""The message-size cap on the real Serve app: refused before the message is whole wherever
the stack allows it, and the server keeps answering.

HTTP: a Content-Length above max_message_bytes gets 413 although no body byte is sent; a
chunked body gets 413 as soon as it passes the cap, although it never ends. Websocket: a frame
above the cap gets a text frame and 1009 from the replica; a frame whose header announces
more than Serve's proxy accepts (16 MiB) is closed with 1009 by the proxy although no payload
byte is sent.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct

import numpy as np
import pytest
import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from services.serve import protocol
from tests.serve.conftest import make_observation

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

TIMEOUT_S = 60  # a server that waited for the whole message would never answer


def _post_head(served, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.cfg.port), timeout=TIMEOUT_S)
    lines = [f"POST {served.cfg.route_prefix.rstrip('/')}/infer HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = json.loads(resp.read())
    sock.close()
    return resp.status, body


def _still_answers(served) -> None:
    client = WebsocketClientPolicy(served.ws_url)
    try:
        answer = client.infer(make_observation(np.random.default_rng(5)))
    finally:
        client._ws.close()
    assert answer["actions"].shape == (10, 7)


def test_http_content_length_refused_before_the_body(served):
    cap = served.cfg.max_message_bytes
    sock = _post_head(served, {"Content-Type": "application/json", "Content-Length": str(2 * cap)})
    status, body = _answer(sock)  # not one body byte was sent
    assert status == 413, body
    assert "Content-Length" in body["error"] and str(cap) in body["error"]
    _still_answers(served)


def test_http_chunked_body_refused_once_past_the_cap(served):
    cap = served.cfg.max_message_bytes
    sock = _post_head(served, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    chunk = b"1" * (64 * 1024)
    try:
        for _ in range(cap // len(chunk) + 4):  # past the cap, and never the final 0-chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    status, body = _answer(sock)
    assert status == 413, body
    assert "not read further" in body["error"] and str(cap) in body["error"]
    _still_answers(served)


def test_websocket_frame_above_the_cap_gets_text_then_1009(served):
    with connect(served.ws_url, compression=None, max_size=None, open_timeout=TIMEOUT_S) as ws:
        protocol.decode_observation(ws.recv(timeout=TIMEOUT_S), 1 << 20)  # metadata first
        ws.send(os.urandom(served.cfg.max_message_bytes + 1))
        text = ws.recv(timeout=TIMEOUT_S)
        assert isinstance(text, str) and "max_message_bytes" in text
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            ws.recv(timeout=TIMEOUT_S)
    assert e.value.rcvd.code == protocol.MESSAGE_TOO_BIG
    _still_answers(served)


def test_websocket_frame_above_the_proxy_limit_closed_on_its_header(served):
    with connect(served.ws_url, compression=None, open_timeout=TIMEOUT_S) as ws:
        ws.recv(timeout=TIMEOUT_S)  # metadata
        # A masked binary frame header (RFC 6455 5.2) announcing one byte more than the
        # proxy's uvicorn accepts, and 16 payload bytes: the rest is never sent.
        size = protocol.PROXY_WS_MAX_BYTES + 1
        ws.socket.sendall(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", size) + os.urandom(20))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            ws.recv(timeout=TIMEOUT_S)
    assert e.value.rcvd is not None and e.value.rcvd.code == protocol.MESSAGE_TOO_BIG
    _still_answers(served)
