#!/usr/bin/env bash
# Regenerates heatmap_preview.png and smooth_preview.png with `umedprotect protect --heatmap` on TotalSegmentator's
# example abdominal CT (Apache-2.0, from its source package; the mask is TotalSegmentator's own prediction):
# the liver (label 5) protected with the bundled protector and with `--codes smooth`, in the CT soft-tissue window.
# Needs the network once (pip download) and the umedprotect command.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --no-binary totalsegmentator --no-build-isolation totalsegmentator==2.18.0 -d "$work"
files=totalsegmentator-2.18.0/tests/reference_files
tar xzf "$work"/totalsegmentator-2.18.0.tar.gz -C "$work" "$files/example_ct_sm.nii.gz" "$files/example_seg.nii.gz"
umedprotect protect "$work/$files/example_ct_sm.nii.gz" "$work/$files/example_seg.nii.gz" --labels 5 --device cpu \
  -o "$work/protected.nii.gz" --heatmap "$here/heatmap_preview.png" --overwrite
umedprotect protect "$work/$files/example_ct_sm.nii.gz" "$work/$files/example_seg.nii.gz" --labels 5 --codes smooth \
  -o "$work/smoothed.nii.gz" --heatmap "$here/smooth_preview.png" --overwrite
