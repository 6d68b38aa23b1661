"""``edge-trash-device`` / ``python3 -m edge_trash.edge_runtime``: the device command line (argparse)."""

import argparse
import json
import logging
import os
import sys
from typing import Callable, List, Optional

# sysexits.h EX_CONFIG: the bundle, sort.yaml or --source is wrong and a restart cannot mend it. The systemd
# unit names it in RestartPreventExitStatus, so a broken sort.yaml leaves the service stopped with its reason,
# instead of failing every 5 s forever. A missing camera, a log folder it may not write, a full disk or a busy
# port exits 1 and is retried (an Edge TPU missing at start is no exit: the CPU model runs, with a fault).
EXIT_CONFIG = 78

# The sort config the installed unit runs with (edge-trash.service's --config; install.sh keeps it across installs)
UNIT_CONFIG = "/etc/edge-trash/sort.yaml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``run`` subcommand)."""
    parser = argparse.ArgumentParser(prog="edge-trash-device",
                                     description="Sort service for the Coral Dev Board: camera -> Edge TPU -> bin.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the sort service")
    run.add_argument("--bundle", required=True, help="bundle directory written by `edge-trash export`")
    run.add_argument("--config", help="sort config (default: BUNDLE/sort.yaml)")
    run.add_argument("--source", default="camera:0",
                     help="camera:N | camera:/dev/videoN | gst:PIPELINE | dir:PATH[?fps=N] | video:PATH")
    run.add_argument("--max-frames", type=int, help="stop after N frames")
    run.add_argument("--log", help="SQLite event log (default: sort.yaml log.path, else BUNDLE/events.sqlite)")
    run.add_argument("--device", help="Edge TPU device, e.g. usb:0 or pci:0 (default: the first one)")
    run.add_argument("--no-health", action="store_true", help="do not start the HTTP health endpoint")
    run.add_argument("-v", "--verbose", action="store_true")
    check = sub.add_parser("check", help="check the bundle and a sort.yaml (after an edit) the way the service "
                                         "would at start, without starting it")
    check.add_argument("--bundle", required=True, help="bundle directory written by `edge-trash export`")
    check.add_argument("--config", help="sort config (default: %s, the installed unit's, where it exists; "
                                        "else BUNDLE/sort.yaml)" % UNIT_CONFIG)
    return parser


def main(argv: Optional[List[str]] = None, interpreter_loader: Optional[Callable] = None) -> int:
    """Entry point; returns the exit status: 78 (``EXIT_CONFIG``) when the bundle or sort config is wrong, the model
    needs a newer runtime than the device has or a package the source or actuator needs is missing, 1 when
    hardware or a resource was missing at start (a restart may find it) or the source failed, 2 on usage."""
    from edge_trash.edge_runtime.actuators import ActuatorError, ActuatorPackageError
    from edge_trash.edge_runtime.decode import DecodeError
    from edge_trash.edge_runtime.interpreter import InterpreterError, InterpreterPackageError, RuntimeMismatchError
    from edge_trash.edge_runtime.manifest import BundleError
    from edge_trash.edge_runtime.sort_config import ConfigError
    from edge_trash.edge_runtime.service import ResourceError, run_service
    from edge_trash.edge_runtime.sources import SourceError, SourceSpecError

    args = build_parser().parse_args(argv)
    if args.command == "check":
        return _check(args.bundle, args.config)
    if args.command != "run":
        build_parser().print_help()
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        sys.stderr.write("edge-trash-device: --max-frames must be >= 1, got %d\n" % args.max_frames)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run_service(args.bundle, args.config, args.source, args.log, args.max_frames,
                              interpreter_loader, args.device, health=not args.no_health)
    except (BundleError, ConfigError, DecodeError, SourceSpecError, RuntimeMismatchError, InterpreterPackageError,
            ActuatorPackageError) as exc:
        sys.stderr.write("edge-trash-device: %s\n" % exc)
        if os.environ.get("INVOCATION_ID"):  # set by systemd for the units it runs
            sys.stderr.write("edge-trash-device: the service stays stopped until this is fixed (a restart "
                             "cannot mend it); then: sudo systemctl restart edge-trash\n")
        return EXIT_CONFIG
    except (InterpreterError, SourceError, ActuatorError, ResourceError) as exc:
        sys.stderr.write("edge-trash-device: %s\n" % exc)
        return 1
    try:
        print(json.dumps(summary, sort_keys=True))
    except OSError:  # the terminal of a service run by hand is gone (SIGHUP): the log has the summary
        pass
    return 1 if summary.get("source_error") or summary.get("stalled") else 0


def _check(bundle: str, config: Optional[str]) -> int:
    """``check``: 0 when the service would start on ``bundle`` with ``config``, else 1 with why."""
    from edge_trash.edge_runtime.install_check import check_edit
    from edge_trash.edge_runtime.manifest import SORT_CONFIG

    if config is None and os.path.isfile(UNIT_CONFIG):  # what the unit runs with, not the bundle's template
        config = UNIT_CONFIG
    problem = check_edit(bundle, config)
    if problem:
        sys.stderr.write("edge-trash-device: %s\n" % problem)
        return 1
    print("edge-trash-device: %s fits %s; the service reads it when it starts: sudo systemctl restart edge-trash "
          "(run by hand: restart it)" % (config or os.path.join(bundle, SORT_CONFIG), bundle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
