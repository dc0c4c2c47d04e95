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
methods sent, space-separated (one response expected per method, in order), and the
response bytes are everything the server sent until it closed. Output:
  {"r": "ok", "responses": [{"status", "headers": [[name, value], ...], "body", "framing"}, ...],
   "closed": bool, "trailing": hex}  every response parsed; "closed" when h11 saw the
   connection end after the last one (the server closed cleanly)
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
    import h11

    conn = h11.Connection(h11.CLIENT)
    responses = []
    try:
        for index, method in enumerate(methods):
            if index > 0:
                conn.start_next_cycle()
            headers = [("Host", "h")]
            conn.send(h11.Request(method=method, target="/", headers=headers))
            conn.send(h11.EndOfMessage())
            if index == 0:
                conn.receive_data(data)
                conn.receive_data(b"")  # the server closed: everything it sent is here
            current = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    raise h11.RemoteProtocolError("response incomplete (NEED_DATA after close)")
                if event is h11.PAUSED:
                    raise h11.RemoteProtocolError("paused")
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    reader = type(conn._reader).__name__
                    current = {
                        "status": event.status_code,
                        "headers": [[n.hex(), v.hex()] for n, v in event.headers.raw_items()],
                        "body": "",
                        "framing": reader,
                    }
                    body = bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    current["body"] = bytes(body).hex()
                    responses.append(current)
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("connection closed before a response")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                if index < len(methods) - 1:
                    break  # the server ends the connection here; no more responses expected
        closed = False
        trailing = b""
        try:
            if conn.their_state is h11.DONE and conn.our_state is h11.DONE and conn.their_state is not h11.MUST_CLOSE:
                pass
            trailing = conn.trailing_data[0]
            closed = conn.trailing_data[1]
        except Exception:
            pass
        return {"r": "ok", "responses": responses, "closed": closed, "trailing": trailing.hex()}
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
