"""A peer of meshlight-middleware built on the OpenTelemetry Python SDK: code nobody here wrote.

callee          Serve HTTP on a free loopback port (printed as the first stdout line). Every GET
                is answered with what the OpenTelemetry Python propagators extract from it:
                trace id, parent span id, sampled flag, baggage, and the lane header.
caller URL LANE Start a span, inject its context and the baggage entry tenant=python into a GET
                of URL with the lane header, and print JSON: the span's ids and the response.
"""

import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider

LANE_HEADER = "x-asm-prefer-tag"


class Callee(BaseHTTPRequestHandler):
    def do_GET(self):
        carrier = {name.lower(): value for name, value in self.headers.items()}
        ctx = propagate.extract(carrier)
        parent = trace.get_current_span(ctx).get_span_context()
        body = json.dumps(
            {
                "trace_id": format(parent.trace_id, "032x") if parent.is_valid else "",
                "parent_span_id": format(parent.span_id, "016x") if parent.is_valid else "",
                "sampled": parent.trace_flags.sampled,
                "baggage": dict(baggage.get_all(ctx)),
                "lane": carrier.get(LANE_HEADER, ""),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def callee():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callee)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def caller(url, lane):
    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("middleware-interop")
    with tracer.start_as_current_span("python-caller") as span:
        token = context.attach(baggage.set_baggage("tenant", "python"))
        try:
            headers = {LANE_HEADER: lane}
            propagate.inject(headers)
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
                answer = json.loads(response.read())
        finally:
            context.detach(token)
        ids = span.get_span_context()
        print(json.dumps({"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x"), "response": answer}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["callee"]:
        callee()
    elif sys.argv[1:2] == ["caller"] and len(sys.argv) == 4:
        caller(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
