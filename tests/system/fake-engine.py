#!/usr/bin/env python3
"""A Docker Engine API stand-in on a Unix socket, for the nspawn test: it answers `/_ping` (with
`API-Version`) and `/info` (a node in no swarm) as dockerd 20.10 does, and logs each request line to
LOG. Usage: fake-engine.py SOCKET LOG"""
import http.server
import json
import os
import socketserver
import sys

sock, log = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = json.dumps(body).encode() if body is not None else b"OK"
        self.send_response(status)
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Type", "application/json" if body is not None else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with open(log, "a") as f:
            f.write(f"{self.command} {self.path}\n")
        path = self.path.split("?")[0]
        if path == "/_ping":
            self.answer(200, None)
        elif path.endswith("/info"):
            self.answer(200, {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}})
        else:
            self.answer(404, {"message": "page not found"})

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if os.path.exists(sock):
    os.unlink(sock)
with Server(sock, Handler) as s:
    os.chmod(sock, 0o660)
    s.serve_forever()
