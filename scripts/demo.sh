#!/usr/bin/env bash
# Quick start: set up, then protect the bundled sample case (brain MRI with tumour mask)
# and write the protected volume, the heatmap preview and the report into out/demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/out/demo}"
source "$ROOT/scripts/setup.sh" ""  # no extras (sourcing passes this script's arguments on otherwise)
mkdir -p "$OUT"
umedprotect protect "$ROOT/Resources/Sample/brain1_image.nrrd" "$ROOT/Resources/Sample/brain1_label.nrrd" \
  -o "$OUT/brain1_protected.nrrd" --heatmap "$OUT/brain1_heatmap.png" --report "$OUT/brain1_report.json" \
  --overwrite
echo "Protected volume, heatmap and report are in $OUT"
