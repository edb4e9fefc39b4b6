"""A JWKS server for mtls-jwt's tests: serves /jwks and /.well-known/openid-configuration.

Control (POST): /control/jwks (body = new JWKS), /control/down (answer 500),
/control/up, /control/stall?seconds=N (the next JWKS answer waits N seconds).
GET /control/hits gives the number of /jwks requests. Prints the port on stdout.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

state = {"jwks": b'{"keys": []}', "hits": 0, "down": False, "stall": 0.0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = urlparse(self.path).path
        if path == "/jwks":
            with lock:
                state["hits"] += 1
                stall, state["stall"] = state["stall"], 0.0
                down, body = state["down"], state["jwks"]
            if stall:
                time.sleep(stall)
            if down:
                self.reply(500, b"down")
            else:
                self.reply(200, body)
        elif path == "/.well-known/openid-configuration":
            port = self.server.server_address[1]
            doc = {"issuer": f"http://127.0.0.1:{port}", "jwks_uri": f"http://127.0.0.1:{port}/jwks"}
            self.reply(200, json.dumps(doc).encode())
        elif path == "/control/hits":
            with lock:
                self.reply(200, str(state["hits"]).encode(), "text/plain")
        else:
            self.reply(404, b"not found", "text/plain")

    def do_POST(self):
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            if url.path == "/control/jwks":
                state["jwks"] = body
            elif url.path == "/control/down":
                state["down"] = True
            elif url.path == "/control/up":
                state["down"] = False
            elif url.path == "/control/stall":
                state["stall"] = float(parse_qs(url.query)["seconds"][0])
            else:
                self.reply(404, b"not found", "text/plain")
                return
        self.reply(200, b"ok", "text/plain")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
