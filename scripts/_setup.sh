# Sourced by the scripts in this folder: make .venv (Python >= 3.11) with shoal and its tools.
# Re-running is cheap: nothing is installed again unless pyproject.toml changed.

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "shoal needs Python 3.11 or newer; install it, or point PYTHON at one: PYTHON=/path/to/python3.11 $0" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  python=$(find_python)
  echo "setting up .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi

stamp=.venv/.shoal-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing shoal and its development tools into .venv" >&2
  # pip >= 25.1 reads [dependency-groups]
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . --group dev
  touch "$stamp"
fi

# The HTML report's tests open it in a real headless Chromium (the system's, never a download).
if [ -z "${SHOAL_NO_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1 &&
  ! command -v chromium-browser >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "installing Chromium (apt-get) for the HTML report's browser tests" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >/dev/null 2>&1; then
    echo "could not install chromium with apt-get; the browser tests will be skipped" >&2
  fi
fi
