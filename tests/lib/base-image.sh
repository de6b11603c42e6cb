#!/bin/sh
# base-image.sh: make docker.io/library/debian:bookworm-slim in the local
# podman store from the Debian mirror with mmdebstrap, when it is not
# there yet, so the project's Dockerfile builds unchanged without a
# registry. The rootfs matches the official slim image: merged /usr and
# no docs, man pages or locales (about 78 MB). It is also tagged
# debian:bookworm for the build stage, which installs all it needs.
set -eu

image=docker.io/library/debian:bookworm-slim
full=docker.io/library/debian:bookworm
if podman image exists "$image"; then
    podman image exists "$full" || podman tag "$image" "$full"
    exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || {
    echo "base-image.sh: mmdebstrap is missing (tests/lib/deps.sh test)" >&2
    exit 1
}
mmdebstrap --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    bookworm - 2>/dev/null |
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$image" >/dev/null
podman tag "$image" "$full"
echo "base-image.sh: imported $image"
