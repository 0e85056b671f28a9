#!/usr/bin/env bash
# Installs everything the demo and the test suite need, on a fresh machine or an old one.
# Idempotent: re-running it only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v sudo >/dev/null 2>&1 || need_apt+=(sudo)
command -v doas >/dev/null 2>&1 || need_apt+=(doas)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${need_apt[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing ${need_apt[*]}; install them (as root: apt-get install ${need_apt[*]})" >&2
    fi
fi

# trio-typing's old stubs shadow trio's own types: make sure it is not installed.
if "$PYTHON" -m pip show trio-typing >/dev/null 2>&1; then
    "$PYTHON" -m pip uninstall -y -q trio-typing
fi
# editable_mode=strict: the default mode for this layout is an import hook that mypy does not
# follow (a consumer would see no types); strict links the package's files under build/, which
# mypy reads.  A new module file needs this script run again.
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test,docs,bench,cli]' \
    --config-settings editable_mode=strict

# The newest requests and urllib3 (installed above) need Python 3.10+; the test that imports requests
# over the wire into a Python 3.8 child has a master serve these, the last to support 3.8
# (tests/test_real_packages.py puts them on that master's path).  Pure Python, no dependencies.
PY38_PACKAGES=.cache/py38-packages
if [ ! -f "$PY38_PACKAGES/requests-2.32.3.dist-info/METADATA" ]; then
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --upgrade \
        --target "$PY38_PACKAGES" --no-binary charset-normalizer \
        requests==2.32.3 urllib3==2.2.3 idna==3.10 'certifi>=2024.8.30' charset-normalizer==3.4.0
fi
