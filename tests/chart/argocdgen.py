"""The `argocd-cm` patch in charts/kiln/argocd/, generated from the Lua health checks beside it.

Each `<group>_<Kind>.lua` becomes the key `resource.customizations.health.<group>_<Kind>` of Argo CD's
argocd-cm ConfigMap, the script as its value. The patch is a whole (if partial) ConfigMap, so it serves
`kubectl patch --type merge --patch-file` and a Kustomize patch alike. tests/chart/test_argocd_health.py
checks it is up to date.

    python tests/chart/argocdgen.py [--check]
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "charts" / "kiln" / "argocd"
PATCH = ARGOCD / "argocd-cm.yaml"
KEY_PREFIX = "resource.customizations.health."

_HEADER = """\
# Kiln's Argo CD health checks as an argocd-cm patch. Generated from the *.lua files beside it by
# `python tests/chart/argocdgen.py`; do not edit. Apply it with
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file charts/kiln/argocd/argocd-cm.yaml
# or list it among a Kustomize overlay's patches. See README.md beside it.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
data:
"""


def scripts() -> dict[str, str]:
    """Each health check's argocd-cm key and its script, by kind name."""
    return {f"{KEY_PREFIX}{path.stem}": path.read_text() for path in sorted(ARGOCD.glob("*.lua"))}


def patch() -> str:
    """The argocd-cm patch holding every health check."""
    lines = [_HEADER]
    for key, script in scripts().items():
        if "\t" in script or not script.endswith("\n") or script.endswith("\n\n"):
            raise ValueError(f"{key}: a script must use spaces, not tabs, and end with exactly one newline")
        lines.append(f"  {key}: |\n")
        lines.extend(f"    {line}\n" if line else "\n" for line in script.splitlines())
    return "".join(lines)


def main(argv: list[str]) -> int:
    fresh = patch()
    if "--check" in argv:
        if not PATCH.exists() or PATCH.read_text() != fresh:
            print(f"{PATCH.relative_to(ROOT)} is stale: run `python tests/chart/argocdgen.py`", file=sys.stderr)
            return 1
        return 0
    PATCH.write_text(fresh)
    print(f"wrote {PATCH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
