"""The load test against a server that answers one request at a time (as `continuous_batching=False` does)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from nbhelpers.serve import load

REPLY_S = 0.4  # each reply takes this long, one after another


class OneAtATime(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(REPLY_S)
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                           "choices": [{"index": 0, "finish_reason": "length",
                                        "message": {"role": "assistant", "content": "a b"}}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_queued_requests_are_measured_not_timed_out():
    """Four clients at once, replies 0.4 s each in turn: the last waits 1.6 s, longer than the client's 1 s
    timeout for one request. Its latency is the measurement (the large rehearsal lost 13 of 16 requests so)."""
    server = HTTPServer(("127.0.0.1", 0), OneAtATime)  # single-threaded: one request at a time
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = load.client(f"http://127.0.0.1:{server.server_port}/v1", timeout=1.0)
        row = load.level(api, "m", "hello", concurrency=4, requests=4, max_tokens=2)
    finally:
        server.shutdown()
        server.server_close()
    assert row["ok"] == 4 and row["failed"] == 0, row["errors"]
    assert row["latency_p95_s"] >= 3 * REPLY_S  # it did queue: the slowest waited for the others
    assert row["completion_tokens"] == 8
