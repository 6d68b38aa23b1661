"""``python3 -m edge_trash.edge_runtime.install_check BUNDLE [SORT_YAML]``: what install.sh checks before it
touches the running service: the new bundle verifies (hashes, labels), and the sort.yaml a previous install
left in /etc (the operator's, kept across installs) fits the new model's classes. Exit 0 when both hold, 1
with the reason and the fix otherwise."""

import sys
from typing import List, Optional


def check_install(bundle: str, kept_config: Optional[str] = None) -> Optional[str]:
    """None when ``bundle`` verifies and ``kept_config`` (if given) loads against its labels; else why not."""
    from edge_trash.edge_runtime.manifest import BundleError, verify_bundle
    from edge_trash.edge_runtime.sort_config import ConfigError, load_sort_config

    try:
        labels = verify_bundle(bundle)["labels"]
    except BundleError as exc:
        return "%s; the running service is unchanged" % exc
    if kept_config:
        try:
            load_sort_config(kept_config, labels)
        except ConfigError as exc:
            return ("%s (kept from the last install) does not fit this model: %s; edit it (the bundle's own "
                    "sort.yaml is the template for this model), then run install.sh again; the running service "
                    "is unchanged" % (kept_config, exc))
    return None


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
