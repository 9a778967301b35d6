#!/bin/sh
# Generates the gRPC stubs of proto/grpc_predict_v2.proto into the package service/grpc/stubs/ (git-ignored), with
# grpcio-tools: the messages (_pb2.py), their types (_pb2.pyi, for mypy) and the service (_pb2_grpc.py).
# Run from the repository root by `make stubs` and by the Dockerfile: sh proto/generate.sh [PYTHON]
#
# The proto is mapped to the virtual path service/grpc/stubs/, so that the generated modules import each other
# as service.grpc.stubs.*; its proto package stays `inference`.
set -eu
python="${1:-python}"
rm -rf service/grpc/stubs
mkdir service/grpc/stubs
"$python" -m grpc_tools.protoc -Iservice/grpc/stubs=proto --python_out=. --pyi_out=. --grpc_python_out=. \
    proto/grpc_predict_v2.proto
echo '"""Generated from proto/ by proto/generate.sh: neither committed nor edited."""' >service/grpc/stubs/__init__.py
