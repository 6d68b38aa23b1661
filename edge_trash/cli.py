"""The ``edge-trash`` command line.

Subcommands live in their own modules and are imported only when run, so
``edge-trash --help`` never imports TensorFlow. Each entry of ``COMMANDS``
names ``module:attribute`` of a ``click.Command`` and a one-line help text
shown in the command list (so listing commands imports nothing).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Dict, List, Optional, Tuple

try:
    import click
except ImportError:  # the device install has no click; the device CLI is edge-trash-device
    click = None  # type: ignore[assignment]

# name -> (module:attribute, short help). Keep in the order a user runs them.
COMMANDS: Dict[str, Tuple[str, str]] = {
    "sample-data": ("edge_trash.tfrecords.sample_data_cli:sample_data",
                    "Write the built-in synthetic litter dataset (COCO JSON + JPEGs)."),
    "build-tfrecords": ("edge_trash.tfrecords.build_cli:build_tfrecords",
                        "Convert a COCO dataset into validated, sharded TFRecords."),
    "analyze": ("edge_trash.tfrecords.analyze_cli:analyze",
                "Report class balance, box sizes and image problems of a dataset."),
    "train": ("edge_trash.train.train_cli:train", "Fine-tune SSD MobileNet v2 on the TFRecords."),
    "evaluate": ("edge_trash.train.evaluate_cli:evaluate",
                 "COCO-evaluate a run, SavedModel or .tflite on a split."),
    "export": ("edge_trash.export.export_cli:export",
               "Quantize to int8, check and compile for the Edge TPU, write the device bundle."),
    "inspect": ("edge_trash.export.inspect_cli:inspect_cmd",
                "Predict which ops of a .tflite run on the Edge TPU."),
    "queue": ("edge_trash.queue_cli:queue", "Export the device's hard-example queue as COCO for relabeling."),
}


def _missing_host_deps(exc: ImportError) -> None:
    sys.stderr.write(
        f"edge-trash: {exc}.\nThe host commands need the host extras: "
        "pip install 'edge-trash[host]' (or run `make demo` in a checkout).\n")
    raise SystemExit(2)


if click is not None:

    class LazyGroup(click.Group):
        """A click group that imports a subcommand's module only when it is invoked."""

        def list_commands(self, ctx: click.Context) -> List[str]:
            return list(COMMANDS)

        def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
            if cmd_name not in COMMANDS:
                return None
            target, _ = COMMANDS[cmd_name]
            module_name, attr = target.split(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                _missing_host_deps(exc)
            return getattr(module, attr)

        def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="edge-trash")
    def cli() -> None:
        """edge-trash: COCO litter photos to a waste sorter on a Coral Edge TPU.

        \b
        Typical run:
          edge-trash build-tfrecords --annotations A.json --images DIR --out data/
          edge-trash train --data data/ --out run/
          edge-trash export --model run/ --data data/ --out bundle/ --edgetpu
        """


def main() -> None:
    """Console entry point."""
    if click is None:
        _missing_host_deps(ImportError("No module named 'click'"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal
    for stream in (sys.stdout, sys.stderr):  # a file name read from disk may hold bytes that were not UTF-8
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from edge_trash.terminal import exit_status_of_signal, note_ctrl_c

    note_ctrl_c()
    try:
        cli()
    except SystemExit as exc:  # "Aborted!" after Ctrl-C exits 130, after a SIGTERM 143, as a killed process would
        raise SystemExit(exit_status_of_signal() or exc.code) from None
    except OSError as exc:  # stdout itself cannot be written (> /dev/full, a full disk): no traceback
        if exc.filename is not None or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
        sys.stderr.write(f"edge-trash: cannot write the output: {exc.strerror}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
