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
# The files benchmark compares with scp and rsync over the loopback sshd.
command -v scp >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
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

# The other master Pythons (pyenv's 3.10+ besides $PYTHON; .ci/run runs the master-side tests
# under each): the package, editable, with its test and cli extras.  A stamp in each one's
# site-packages records the checkout and pyproject.toml it was installed from, so a re-run with
# nothing changed costs no pip run.
stamp_text="$PWD $(sha256sum pyproject.toml | cut -d' ' -f1)"
for py in $(PYTHON="$PYTHON" bash scripts/master-pythons); do
    stamp="$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/trimitogen-setup.stamp"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$stamp_text" ]; then
        continue
    fi
    echo "setup: installing the package and its test dependencies into $py" >&2
    "$py" -m pip install -q --disable-pip-version-check -e '.[test,cli]'
    echo "$stamp_text" >"$stamp"
done

# Child interpreters too old for the master's Trio (it needs 3.10+) get a Trio of their own, so
# the tests can show a child using its own Trio for Trio coroutine functions.
for child in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.6.*/bin/python3 \
             "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.7.*/bin/python3 \
             "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.8.*/bin/python3 \
             "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9.*/bin/python3; do
    [ -x "$child" ] || continue
    "$child" -c 'import trio' 2>/dev/null && continue
    echo "setup: installing trio for $child" >&2
    "$child" -m pip install -q --disable-pip-version-check trio \
        || echo "setup: no Trio release for $child on the package index; the Trio tests use the oldest child that has one" >&2
done

# The newest requests and urllib3 (installed above) need Python 3.10+; the test that imports requests
# over the wire into a Python 3.8 child has a master serve these, the last to support 3.8
# (tests/test_real_packages.py puts them on that master's path).  Pure Python, no dependencies.
PY38_PACKAGES=.cache/py38-packages
if [ ! -f "$PY38_PACKAGES/requests-2.32.3.dist-info/METADATA" ]; then
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --upgrade \
        --target "$PY38_PACKAGES" --no-binary charset-normalizer \
        requests==2.32.3 urllib3==2.2.3 idna==3.10 'certifi>=2024.8.30' charset-normalizer==3.4.0
fi
