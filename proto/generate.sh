#!/usr/bin/env bash
# Regenerates the Go, gRPC, gateway and OpenAPI code from the Skaffold-compatible
# protos in this directory, and the Go and gRPC code (only) of the event sink
# API in sink/v1, and the job history API in jobs/v1 (with its gateway). Reproducible: protoc is Debian bookworm's 3.21.12 and every
# plugin is pinned in tools/go.mod. Run through `make proto`.
set -euo pipefail
cd "$(dirname "$0")/.."

want_protoc="libprotoc 3.21.12"
if ! command -v protoc >/dev/null; then
  echo "proto: protoc not found; install it with: apt-get install -y protobuf-compiler libprotobuf-dev" >&2
  exit 1
fi
if [ "$(protoc --version)" != "$want_protoc" ]; then
  echo "proto: need '$want_protoc' (Debian bookworm's protobuf-compiler), found '$(protoc --version)'" >&2
  exit 1
fi
wkt=/usr/include/google/protobuf/empty.proto
[ -f "$wkt" ] || { echo "proto: $wkt missing; install libprotobuf-dev" >&2; exit 1; }

bin=$PWD/.bin
mkdir -p "$bin"
(cd tools && go build -o "$bin/" \
  google.golang.org/protobuf/cmd/protoc-gen-go \
  google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2)

# google/api/{annotations,http}.proto, from the module proxy (grpc-gateway v1
# ships them); not vendored into this repository.
googleapis=$(cd tools && go mod download -json github.com/grpc-ecosystem/grpc-gateway@v1.16.0 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/third_party/googleapis
[ -f "$googleapis/google/api/annotations.proto" ] || { echo "proto: google/api/annotations.proto not found under $googleapis" >&2; exit 1; }

rm -f proto/*/*.pb.go proto/*/*.pb.gw.go proto/*/*.swagger.json proto/sink/v1/*.pb.go proto/jobs/v1/*.pb.go proto/jobs/v1/*.pb.gw.go proto/jobs/v1/*.swagger.json
PATH="$bin:$PATH" protoc -I proto -I "$googleapis" -I /usr/include \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out=proto --grpc-gateway_opt=paths=source_relative \
  --openapiv2_out=proto --openapiv2_opt=disable_default_errors=false \
  enums/enums.proto v1/skaffold.proto v2/skaffold.proto
rm -f proto/enums/enums.swagger.json # no service: nothing to describe
# The event sink API is served by operators, not by kube-git-deploy: no
# gateway and no OpenAPI description.
PATH="$bin:$PATH" protoc -I proto -I "$googleapis" -I /usr/include \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  sink/v1/sink.proto
# The job history API: kube-git-deploy's own, on the same server and gateway.
PATH="$bin:$PATH" protoc -I proto -I "$googleapis" -I /usr/include \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out=proto --grpc-gateway_opt=paths=source_relative \
  --openapiv2_out=proto --openapiv2_opt=disable_default_errors=false \
  jobs/v1/jobs.proto
go run ./proto/cmd/openapi-scope proto/v1/skaffold.swagger.json proto/v2/skaffold.swagger.json
echo "proto: generated $(ls proto/*/*.go proto/*/*.json proto/sink/v1/*.go proto/jobs/v1/*.go proto/jobs/v1/*.json | wc -l) files"
