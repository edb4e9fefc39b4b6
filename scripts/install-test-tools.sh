#!/usr/bin/env bash
# Installs, idempotently, every external tool the tests run against:
#   - the openssl CLI (Debian package) for s_client / s_server / verify / x509;
#   - ss (Debian iproute2), to read socket options in a test;
#   - a project-local venv (.venv) with the Python peers from scripts/requirements-test.txt;
#   - cargo-machete (ci.sh's unused-dependency check; stable Rust, no nightly).
# A second run with nothing changed does no network work.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" -eq 0 ]; then
    if [ ! -f /tmp/.mtls-apt-updated ]; then
      apt-get update -qq && touch /tmp/.mtls-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

command -v openssl >/dev/null 2>&1 || apt_install openssl
# ss (iproute2): a test reads the channel's TCP keepalive off its socket.
command -v ss >/dev/null 2>&1 || apt_install iproute2

machete_version=0.9.2
if [ "$(cargo machete --version 2>/dev/null)" != "$machete_version" ]; then
  echo "==> installing cargo-machete $machete_version"
  cargo install --locked --quiet "cargo-machete@$machete_version"
fi

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3-venv
fi

req=scripts/requirements-test.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing test peers into .venv ($req)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
