#!/usr/bin/env bash
# Stages the build contexts of the service images in .bin/images/<name>:
# the static binary, compiled here by the Go toolchain, and rootfs/ (CA
# certificates, /etc/passwd and /etc/group with the nonroot user 65532, a
# world-writable sticky /tmp). <name>/Dockerfile (FROM scratch) then only
# copies them, so the image builds the same way with a Docker Engine that
# cannot pull base images (here, CI) and on Cloud Build.
#
#   tools/images/stage.sh api runner
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${IMAGES_DIR:-.bin/images}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] || { echo "images: CA bundle $ca is missing (apt-get install ca-certificates, or set CA_BUNDLE)" >&2; exit 1; }

for name in "$@"; do
  case $name in
    api | runner) pkg=./$name ;;
    *) echo "images: unknown image $name (api, runner)" >&2; exit 2 ;;
  esac
  ctx=$out/$name
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
  chmod 1777 "$ctx/rootfs/tmp"
  cp "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
  CGO_ENABLED=0 GOOS=linux GOARCH=${GOARCH:-amd64} GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags='-s -w' -o "$ctx/$name" "$pkg"
  echo "images: staged $ctx ($(du -sh "$ctx/$name" | cut -f1) binary)"
done
