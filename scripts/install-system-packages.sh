#!/usr/bin/env bash
# What the test suite needs from Debian besides Python, called by `make test` and `.ci/run` before any test:
#   postgresql               the team stack's database (argml.stack runs initdb/pg_ctl itself, on 127.0.0.1)
#   chromium-headless-shell  the MLflow UI checks (argml.tracking.ui); any Chromium on PATH will do
#   nginx                    the reverse-proxy test (deploy/nginx-serve.conf): one on PATH, else Debian's package
#                            unpacked into .cache/nginx, so no service is installed or started
# As root it installs what is missing. Otherwise it installs nothing and, when something is missing, prints the
# one command to run and exits 1. `--check` only reports. Set CHROMIUM_PACKAGE to install another Chromium package.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM_PACKAGE=${CHROMIUM_PACKAGE:-chromium-headless-shell}
NGINX_DIR=.cache/nginx

have_postgresql() { command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_chromium() { command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null \
                    || command -v chromium-browser >/dev/null; }
have_nginx() { test -x "$NGINX_DIR/usr/sbin/nginx" || command -v nginx >/dev/null; }

missing=()
have_postgresql || missing+=(postgresql)
have_chromium || missing+=("$CHROMIUM_PACKAGE")
have_nginx || missing+=(nginx)
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: postgresql, Chromium and nginx are there"
  exit 0
fi
if [ "${1:-}" = "--check" ] || [ "$(id -u)" -ne 0 ]; then
  echo "system packages missing: ${missing[*]}. Install them (once) with:" >&2
  echo "  sudo $PWD/scripts/install-system-packages.sh" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
packages=()
for package in "${missing[@]}"; do [ "$package" = nginx ] || packages+=("$package"); done
if [ ${#packages[@]} -gt 0 ]; then
  echo "system packages: installing ${packages[*]}"
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
if ! have_nginx; then
  echo "system packages: unpacking Debian's nginx into $NGINX_DIR"
  download=$(mktemp -d)
  (cd "$download" && apt-get download -qq -o APT::Sandbox::User=root nginx)
  mkdir -p "$NGINX_DIR"  # dpkg -x makes only the last folder
  dpkg -x "$download"/nginx_*.deb "$NGINX_DIR"
  rm -rf "$download"
fi
have_postgresql && have_chromium && have_nginx
echo "system packages: postgresql, Chromium and nginx are there"
