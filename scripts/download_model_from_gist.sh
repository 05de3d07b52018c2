#!/usr/bin/env bash
# Caffe's download_model_from_gist.sh, with its arguments, as a thin wrapper:
# downloads gist <gist_id> (an id, user/id or a gist URL) into
# <dirname>/<gist_id with / as -> (<dirname> defaults to ./models), refusing to
# overwrite an existing directory, as Caffe's script did.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: download_model_from_gist.sh <gist_id> <dirname>" >&2
  exit 2
fi
if command -v caffezoo >/dev/null 2>&1; then
  exec caffezoo gist download "$1" --into "${2:-./models}"
fi
exec "${PYTHON:-python3}" -m caffezoo gist download "$1" --into "${2:-./models}"
