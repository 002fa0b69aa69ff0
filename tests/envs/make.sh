#!/usr/bin/env bash
# What the tests compare against or drive, beside the main .venv (run from the repo root):
#   .venv-floors     requirements.txt at its lower bounds (constraints-floors.txt): tests/test_floors.py
#   .venv-datasets31 an old datasets release, as a user of the published dataset may have it: tests/test_clients.py
#   chromium, chromedriver  Debian's headless browser and its driver: tests/test_space.py
# Each is made once and kept while its recipe is unchanged; the tests skip, saying so, where one is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

make_env() {  # make_env DIR PIP-ARGS...: (re)create DIR unless it was made, completely, from the same recipe
  local dir=$1; shift
  local recipe="$* $(cat constraints-floors.txt requirements.txt | sha256sum)"
  if [ -f "$dir/.recipe" ] && [ "$(cat "$dir/.recipe")" = "$recipe" ]; then return; fi
  rm -rf "$dir"  # absent, from another recipe, or half made (.recipe is written last)
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q "$@"
  echo "$recipe" > "$dir/.recipe"
}

make_env .venv-floors torch==2.13.0 -c constraints-floors.txt -r requirements.txt
make_env .venv-datasets31 datasets==3.1.0 pillow

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "chromium could not be installed: tests/test_space.py will skip its browser test"
  else
    echo "chromium and chromium-driver are missing (install them as root): tests/test_space.py will skip its browser test"
  fi
fi
