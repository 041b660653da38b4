#!/usr/bin/env python3
"""Ask Docent a question from Python, with stubs generated from proto/ by grpcio-tools.

    python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen proto/docent/v1/*.proto
    PYTHONPATH=gen python examples/python/ask.py --addr 127.0.0.1:7878 --token alice-dev-token "How do I reset my VPN token?"

(`examples/python/generate.sh gen` runs the first line.) For TLS pass --ca (the daemon's CA, PEM);
for a service identity with `act_as`, --as USER asks on behalf of that user. Errors carry a stable
reason code in a google.rpc.ErrorInfo detail; this example prints the status code and message.
"""
import argparse
import json
import sys

import grpc

from docent.v1 import assistant_pb2, assistant_pb2_grpc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("question")
    p.add_argument("--addr", default="127.0.0.1:7878")
    p.add_argument("--token", required=True, help="personal token, API key or JWT")
    p.add_argument("--ca", help="PEM CA file: connect with TLS")
    p.add_argument("--as", dest="on_behalf_of", default="", help="ask on behalf of this user")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    if a.ca:
        with open(a.ca, "rb") as f:
            channel = grpc.secure_channel(a.addr, grpc.ssl_channel_credentials(f.read()))
    else:
        channel = grpc.insecure_channel(a.addr)
    stub = assistant_pb2_grpc.AssistantStub(channel)
    try:
        resp = stub.Ask(
            assistant_pb2.AskRequest(question=a.question, on_behalf_of=a.on_behalf_of),
            metadata=[("authorization", f"Bearer {a.token}")],
            timeout=60,
        )
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    status = assistant_pb2.AnswerStatus.Name(resp.status)
    if a.json:
        print(json.dumps({
            "status": status,
            "answer": resp.answer,
            "message": resp.message,
            "citations": [{"title": c.title, "uri": c.uri, "page": c.page} for c in resp.citations],
        }))
        return 0
    print(resp.answer if resp.status == assistant_pb2.ANSWER_STATUS_ANSWERED else resp.message)
    for i, c in enumerate(resp.citations, 1):
        print(f"[{i}] {c.title} — {c.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
