#!/usr/bin/env bash
# Caffe's upload_model_to_gist.sh, with its arguments, as a thin wrapper:
# uploads the model info of <dirname> as a secret gist (or updates the gist in
# its gist_id), and writes gist_id back into readme.md — in one run.
# Needs a token (CAFFEZOO_TOKEN, GITHUB_TOKEN or ~/.gist); CAFFEZOO_GIST_API
# picks the server (default GitHub).
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: upload_model_to_gist.sh <dirname>" >&2
  exit 2
fi
if command -v caffezoo >/dev/null 2>&1; then
  exec caffezoo gist upload "$1"
fi
exec "${PYTHON:-python3}" -m caffezoo gist upload "$1"
