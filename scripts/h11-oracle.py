#!/usr/bin/env python3
"""h11 as an oracle for CogenHTTP's tests (Debian's python3-h11, 0.14).

Usage:
  h11-oracle.py --check                  exit 0 if h11 imports (prints its version)
  h11-oracle.py requests CASES_FILE      judge requests (h11 as the server)
  h11-oracle.py responses CASES_FILE     judge responses (h11 as the client)

CASES_FILE holds one case per line, hex-encoded. Prints one JSON line per case, in order;
every byte string in the output is hex-encoded.

requests: each case is the bytes a client sent. Output:
  {"r": "accept", "method", "target", "version", "headers": [[name, value], ...],
   "framing": "chunked" | "length", "length": N, "body", "consumed": N}
  {"r": "reject", "error": "..."}        h11 raised a protocol error
  {"r": "incomplete", "completed": R, "completed_error": E}
                                         h11 needs more bytes for the first request; R (and E)
                                         is its verdict on the case plus CRLF CRLF

responses: each case is "METHODS_HEX:RESPONSE_BYTES_HEX", where METHODS is the request
methods sent, space-separated (one response per method, in order; GET past the list), and
the response bytes are everything the server sent until it closed. Output:
  {"r": "ok", "responses": [{"status", "method", "headers": [[name, value], ...], "framing",
   "informational", "body_length"}, ...], "trailing": N, "trailing_head": hex}
     every response parsed; N bytes were left after the last one (after a response that
     ends the connection, or unparseable as a next response's start)
  {"r": "error", "error": "...", "responses": [...]}  a malformed response, after those parsed
"""
import json
import sys


def judge_request(data):
    import h11

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = None
    framing = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return {"r": "incomplete"}
            if isinstance(event, h11.Request):
                request = event
                reader = conn._reader  # private: which body reader h11 chose
                name = type(reader).__name__
                if name == "ChunkedReader":
                    framing = ("chunked", 0)
                elif name == "ContentLengthReader":
                    framing = ("length", reader._length)
                else:
                    framing = (name, 0)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                consumed = len(data) - len(conn.trailing_data[0])
                return {
                    "r": "accept",
                    "method": request.method.hex(),
                    "target": request.target.hex(),
                    "version": request.http_version.decode("ascii"),
                    "headers": [[n.hex(), v.hex()] for n, v in request.headers.raw_items()],
                    "framing": framing[0],
                    "length": framing[1],
                    "body": bytes(body).hex(),
                    "consumed": consumed,
                }
            else:
                return {"r": "reject", "error": "unexpected event %r" % (event,)}
    except h11.ProtocolError as error:
        return {"r": "reject", "error": str(error)}


def judge_responses(methods, data):
    """Parses the responses in `data` (everything the server sent, then its close) as a
    client that sent `methods` (GET past the list). Stops after a response that ends the
    connection, or when no bytes are left."""
    import h11

    if not data:
        return {"r": "ok", "responses": [], "trailing": 0, "trailing_head": ""}
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")
    responses = []
    index = 0
    try:
        while True:
            if index > 0:
                if h11.MUST_CLOSE in (conn.our_state, conn.their_state):
                    break
                if not conn.trailing_data[0]:
                    break
                conn.start_next_cycle()
            method = methods[index] if index < len(methods) else "GET"
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
            conn.send(h11.EndOfMessage())
            current = None
            body = 0
            informational = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    raise h11.RemoteProtocolError("unexpected %r" % (event,))
                if isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("connection closed inside a response")
                if isinstance(event, h11.InformationalResponse):
                    informational += 1
                    continue
                if isinstance(event, h11.Response):
                    current = {
                        "status": event.status_code,
                        "method": method,
                        "headers": [[n.hex(), v.hex()] for n, v in event.headers.raw_items()],
                        "framing": type(conn._reader).__name__,
                        "informational": informational,
                    }
                elif isinstance(event, h11.Data):
                    body += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    current["body_length"] = body
                    responses.append(current)
                    break
            index += 1
        trailing = conn.trailing_data[0]
        return {"r": "ok", "responses": responses, "trailing": len(trailing), "trailing_head": trailing[:120].hex()}
    except h11.ProtocolError as error:
        return {"r": "error", "error": str(error), "responses": responses}


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--check":
        try:
            import h11
        except ImportError:
            print("h11 missing")
            return 1
        print("h11 " + h11.__version__)
        return 0
    if len(sys.argv) != 3 or sys.argv[1] not in ("requests", "responses"):
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.stdout
    with open(sys.argv[2], "r") as cases:
        for line in cases:
            line = line.strip()
            if sys.argv[1] == "requests":
                data = bytes.fromhex(line)
                result = judge_request(data)
                if result["r"] == "incomplete":
                    # What h11 says once the head surely ended (it parses a head only then).
                    completed = judge_request(data + b"\r\n\r\n")
                    result["completed"] = completed["r"]
                    result["completed_error"] = completed.get("error", "")
            else:
                methods_hex, _, data_hex = line.partition(":")
                methods = bytes.fromhex(methods_hex).decode("latin-1").split()
                result = judge_responses(methods, bytes.fromhex(data_hex))
            out.write(json.dumps(result, separators=(",", ":")) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
