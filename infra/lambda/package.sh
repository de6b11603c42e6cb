#!/bin/sh
# package.sh BINARY OUT.zip: the p2pmesh binary as an AWS Lambda function
# for the provided.al2023 runtime, on the architecture it was built for
# (x86_64 here; build on an aarch64 machine, e.g. a t4g, for arm64).
#
# The zip holds bin/p2pmesh (stripped), lib/ with every shared library it
# needs and the dynamic loader it was linked against (provided.al2023 has
# an older glibc and none of libevent, hiredis, cJSON), and bootstrap, a
# two-line shell script that runs the binary through that loader with
# --role=lambda. SSL_CERT_FILE defaults to Amazon Linux's CA bundle, since
# the bundled OpenSSL looks where Debian keeps certificates.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY OUT.zip" >&2
    exit 2
fi
bin=$1
out=$2
for tool in ldd strip zip; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "package.sh: $tool is missing (apt-get install zip binutils)" >&2
        exit 1
    }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin" "$tmp/lib"
strip -o "$tmp/bin/p2pmesh" "$bin"

# Libraries as resolved here ("name => /path (addr)"), and the loader
# (the one line that starts with an absolute path).
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r so; do
        cp -L "$so" "$tmp/lib/"
    done
loader=$(ldd "$bin" | awk '$1 ~ /^\// { print $1 }' | xargs -n1 basename)
if [ -z "$loader" ]; then
    echo "package.sh: $bin has no dynamic loader (static build?)" >&2
    exit 1
fi

cat >"$tmp/bootstrap" <<SCRIPT
#!/bin/sh
export SSL_CERT_FILE="\${SSL_CERT_FILE:-/etc/pki/tls/certs/ca-bundle.crt}"
exec "\$LAMBDA_TASK_ROOT/lib/$loader" --library-path "\$LAMBDA_TASK_ROOT/lib" "\$LAMBDA_TASK_ROOT/bin/p2pmesh" --role=lambda "\$@"
SCRIPT
chmod 755 "$tmp/bootstrap" "$tmp/bin/p2pmesh"

rm -f "$out"
case $out in /*) dest=$out ;; *) dest=$(pwd)/$out ;; esac
(cd "$tmp" && zip -q -X -r "$dest" bootstrap bin lib)
echo "package.sh: wrote $out ($(wc -c <"$out") bytes, $(find "$tmp/lib" -type f | wc -l) libraries)"
