#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (pip install -e ".[dev]"); configuration: pyproject's
# [tool.mutmut]. mutmut names modules from their path and strips only "src.", so the run happens in a scratch
# copy with UMedProtect/ as src/. Prints the survivors and the score: mutants detected (a test failed or timed
# out) over mutants run (detected, survived, or run by no test).
#   scripts/mutation.sh                                      # every mutant (hours on two cores)
#   scripts/mutation.sh 'umedprotect.intensity.*' 'umedprotect.regions.*'   # these, one pattern after the other
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${UMEDPROTECT_MUTATION_DIR:-${TMPDIR:-/tmp}/umedprotect-mutation}"
rm -rf "$work"
mkdir -p "$work"
cp -r "$repo/UMedProtect" "$work/src"
mkdir -p "$work/Resources"
cp -r "$repo/Testing" "$repo/pyproject.toml" "$work/"
cp -r "$repo/Resources/Sample" "$work/Resources/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
cd "$work"
unset PYTHONPATH  # the mutated copy, not the repository's code, must be imported
export OMP_NUM_THREADS=1
for pattern in "${@:-*}"; do
  mutmut run --max-children "${UMEDPROTECT_MUTATION_JOBS:-2}" "$pattern" || true
done
mutmut results
mutmut export-cicd-stats >/dev/null
python - <<'PY'
import json
stats = json.load(open("mutants/mutmut-cicd-stats.json"))
detected = stats["killed"] + stats["timeout"]
run = detected + stats["survived"] + stats["no_tests"]
print(f"mutation score: {detected} of {run} mutants detected ({100 * detected / max(run, 1):.1f} %); {stats}")
PY
