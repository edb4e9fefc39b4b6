"""A Python grpcio client for the bookstore, generated from proto/bookstore.proto at run time.

Calls ListShelves over mTLS with a bearer token, then once without a token, then the
grpc.health.v1 check of the bookstore service, and prints the outcomes as JSON. Usage:

    bookstore_client.py --proto-dir DIR --port PORT --ca CA --cert CERT --key KEY --token T
"""

import argparse
import json
import os
import sys
import tempfile


def generate_stubs(proto_dir: str, out_dir: str) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "bookstore.proto",
        ]
    )
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed with {rc}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--server-name", default="bookstore.local")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bookstore-stubs-") as out_dir:
        generate_stubs(args.proto_dir, out_dir)
        sys.path.insert(0, out_dir)
        print(json.dumps(list_shelves(args)))


def list_shelves(args: argparse.Namespace) -> dict:
    import grpc
    from google.protobuf import empty_pb2

    import bookstore_pb2_grpc

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{args.port}",
        credentials,
        options=[("grpc.ssl_target_name_override", args.server_name)],
    )
    stub = bookstore_pb2_grpc.BookstoreStub(channel)

    response, call = stub.ListShelves.with_call(
        empty_pb2.Empty(),
        metadata=[("authorization", f"Bearer {args.token}")],
        timeout=10,
    )
    result = {
        "shelves": [{"id": s.id, "theme": s.theme} for s in response.shelves],
        "replica": dict(call.initial_metadata()).get("x-bookstore-replica"),
    }
    try:
        stub.ListShelves(empty_pb2.Empty(), timeout=10)
        result["no_token"] = "answered"
    except grpc.RpcError as e:
        result["no_token"] = {"code": e.code().name, "details": e.details()}
    # grpc.health.v1 needs no token (the server's JWT rules skip it).
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="endpoints.examples.bookstore.Bookstore"),
        timeout=10,
    )
    result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
    channel.close()
    return result


if __name__ == "__main__":
    main()
