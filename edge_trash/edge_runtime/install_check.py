"""``python3 -m edge_trash.edge_runtime.install_check BUNDLE [SORT_YAML]``: what install.sh checks before it
touches the running service: the new bundle verifies (hashes, labels), the sort.yaml a previous install
left in /etc (the operator's, kept across installs) fits the new model's classes, and the packages the unit's
camera and the configured actuator need are installed. Exit 0 when all hold, 1 with the reason and the fix
otherwise."""

import importlib.util
import os
import sys
from typing import Callable, List, Optional, Tuple

from edge_trash.edge_runtime.actuators import INSTALL_PERIPHERY, INSTALL_PYSERIAL
from edge_trash.edge_runtime.sources import INSTALL_OPENCV

# What the installed unit needs beyond numpy and the interpreter: its --source camera:0 reads through OpenCV, and
# each actuator type its own package (the module, and how to install it, as the service's own errors say).
CAMERA_PACKAGE = ("cv2", INSTALL_OPENCV)
ACTUATOR_PACKAGES = {"gpio": ("periphery", INSTALL_PERIPHERY), "pwm": ("periphery", INSTALL_PERIPHERY),
                     "serial": ("serial", INSTALL_PYSERIAL)}


def missing_packages(actuator_type: str, installed: Optional[Callable[[str], bool]] = None) -> List[str]:
    """The install commands of the packages the unit needs (OpenCV for its camera, the ``actuator_type``'s
    package) that this board lacks; ``installed`` (module name -> bool) is injected by tests."""
    found = installed or (lambda name: importlib.util.find_spec(name) is not None)
    needs = [CAMERA_PACKAGE] + ([ACTUATOR_PACKAGES[actuator_type]] if actuator_type in ACTUATOR_PACKAGES else [])
    return ["`%s` (%s)" % (how, module) for module, how in needs if not found(module)]


def find_problem(bundle: str, config: Optional[str] = None,
                 installed: Optional[Callable[[str], bool]] = None) -> Optional[Tuple[str, str]]:
    """``(what, why)`` of the first thing that would stop the service at start: ``'bundle'`` (it does not verify),
    ``'config'`` (``config``, default the bundle's sort.yaml, does not load against its labels) or ``'packages'``
    (the install commands of what the unit needs and the board lacks); None when all hold."""
    from edge_trash.edge_runtime.manifest import SORT_CONFIG, BundleError, verify_bundle
    from edge_trash.edge_runtime.sort_config import ConfigError, load_sort_config

    try:
        labels = verify_bundle(bundle)["labels"]
    except BundleError as exc:
        return "bundle", str(exc)
    try:
        actuator = load_sort_config(config or os.path.join(bundle, SORT_CONFIG), labels).actuator
    except ConfigError as exc:
        return "config", str(exc)
    missing = missing_packages(str(actuator.get("type", "simulated")), installed)
    return ("packages", " and ".join(missing)) if missing else None


def _packages_needed(missing: str, then: str) -> str:
    several = " and " in missing
    return ("the service needs %s: install %s, then %s (a restart would not bring %s)"
            % ("these packages" if several else "this package", missing, then, "them" if several else "it"))


def check_install(bundle: str, kept_config: Optional[str] = None,
                  installed: Optional[Callable[[str], bool]] = None) -> Optional[str]:
    """None when ``bundle`` verifies, ``kept_config`` (if given) loads against its labels and the packages the
    unit needs are installed (:func:`missing_packages`); else why not."""
    found = find_problem(bundle, kept_config, installed)
    if found is None:
        return None
    what, why = found
    if what == "packages":
        return _packages_needed(why, "run install.sh again") + "; the running service is unchanged"
    if what == "config" and kept_config:
        return ("%s (kept from the last install) cannot be used with this bundle: %s; edit it (the bundle's own "
                "sort.yaml is the template for this model and this version), then run install.sh again; the "
                "running service is unchanged" % (kept_config, why))
    # the bundle, or its own sort.yaml (an operator's edit before the copy: sort.yaml has no hash check)
    return "%s; the running service is unchanged" % why


def check_edit(bundle: str, config: Optional[str] = None,
               installed: Optional[Callable[[str], bool]] = None) -> Optional[str]:
    """``edge-trash-device check``: None when the service would start on ``bundle`` with ``config`` (an edited
    sort.yaml); else why not. The service reads sort.yaml only when it starts, so a bad edit found here has not
    stopped it; found by the next restart (a power cut, a SIGHUP), it would (exit 78)."""
    found = find_problem(bundle, config, installed)
    if found is None:
        return None
    what, why = found
    if what == "packages":
        return _packages_needed(why, "check again")
    return ("%s; the service would not start with it (exit 78), and keeps running as it was until it restarts: "
            "fix it, then check again" % why)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: BUNDLE [SORT_YAML]."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        sys.stderr.write("usage: python3 -m edge_trash.edge_runtime.install_check BUNDLE [SORT_YAML]\n")
        return 2
    problem = check_install(args[0], args[1] if len(args) > 1 else None)
    if problem:
        sys.stderr.write("install.sh: %s\n" % problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
