"""The only module that touches pycoral / tflite_runtime / ai_edge_litert and libedgetpu.

``load_interpreter`` runs the Edge TPU model through the ``libedgetpu.so.1`` delegate when a TPU
is present, otherwise the CPU int8 model with a loud warning and ``accelerator == 'cpu'``. Every
known failure becomes an ``InterpreterError`` that says what to do (a ``RuntimeMismatchError`` when
the model needs a newer runtime than the device has, which a restart cannot mend). ``import_module`` is injected
so tests can fake each failure without the packages.
"""

import importlib
import logging
import os
import re
from typing import Callable, Optional

LOG = logging.getLogger(__name__)
EDGETPU_LIBRARY = "libedgetpu.so.1"
# In order of preference for the Edge TPU delegate (pycoral wraps tflite_runtime).
INTERPRETER_MODULES = ("tflite_runtime.interpreter", "ai_edge_litert.interpreter")

INSTALL_INTERPRETER = (
    "No TFLite interpreter package is installed (tried pycoral, tflite_runtime, ai_edge_litert). "
    "On the Coral Dev Board (Mendel): `sudo apt-get update && sudo apt-get install python3-pycoral` "
    "(brings python3-tflite-runtime and libedgetpu1-std). On another Linux machine: "
    "`pip install ai-edge-litert` (CPU) plus libedgetpu from https://coral.ai/software/ for a TPU.")
INSTALL_LIBEDGETPU = "`sudo apt-get install libedgetpu1-std` (Coral's apt repository)"


class InterpreterError(Exception):
    """The model cannot be run; the message says why and what to do."""


class RuntimeMismatchError(InterpreterError):
    """The model needs a newer Edge TPU runtime or TFLite interpreter than this device has: a restart cannot
    mend it (the service exits 78, as for a broken bundle)."""


class InterpreterPackageError(InterpreterError):
    """No TFLite interpreter package is installed: a restart cannot mend it (the service exits 78, as for an
    actuator's missing package), where exit 1 had systemd start it again every 5 s for ever."""


class LoadedInterpreter:
    """An allocated interpreter plus what it runs on.

    ``accelerator`` is ``'edgetpu'`` or ``'cpu'``; ``warning`` is set when the service runs on the
    CPU although a TPU model was provided (the health endpoint reports it).
    """

    def __init__(self, interpreter, accelerator: str, model_path: str, package: str,
                 warning: Optional[str] = None):
        self.interpreter = interpreter
        self.accelerator = accelerator
        self.model_path = model_path
        self.package = package
        self.warning = warning

    def __repr__(self) -> str:
        return "LoadedInterpreter(%s on %s via %s)" % (os.path.basename(self.model_path),
                                                      self.accelerator, self.package)


def _find_interpreter_module(import_module: Callable):
    for name in INTERPRETER_MODULES:
        try:
            return import_module(name), name.split(".")[0]
        except ImportError:
            continue
    raise InterpreterPackageError(INSTALL_INTERPRETER)


def _visible_tpus(import_module: Callable) -> str:
    """'; pycoral sees: [...]' when pycoral is installed (it can list TPUs), else ''."""
    try:
        edgetpu = import_module("pycoral.utils.edgetpu")
        return "; pycoral sees these Edge TPUs: %s" % (edgetpu.list_edge_tpus(),)
    except Exception:  # pycoral is optional; listing must never hide the real error
        return ""


def _runtime_too_old(message: str) -> Optional[str]:
    match = re.search(r"requires runtime version \(?(\d+)\)?.*?runtime version \(?(\d+)\)?", message)
    if not match and "runtime version" not in message:
        return None
    needed, have = (match.group(1), match.group(2)) if match else ("?", "?")
    return ("The Edge TPU runtime is too old for this model (model needs runtime %s, installed %s). "
            "Update it: `sudo apt-get update && sudo apt-get install libedgetpu1-std`, or recompile the "
            "model for the installed runtime: `edgetpu_compiler -m %s model_int8.tflite`. (%s)"
            % (needed, have, have, message.strip()))


def _ops_too_new(message: str, model_path: str, package: str) -> Optional[str]:
    """What to do when the interpreter has no kernel for an op at the model's version, or None."""
    match = re.search(r"Didn't find op for builtin opcode '([^']+)' version '(\d+)'", message)
    if not match:
        return None
    newer = ("on Python 3.9 or later, `pip uninstall tflite-runtime && pip install ai-edge-litert` (this service "
             "prefers tflite_runtime when both are there)" if package == "tflite_runtime" else
             "`pip install -U ai-edge-litert`")
    return ("%s needs TFLite's %s op at version %s, which this interpreter (%s) does not have. Coral's packages read "
            "ops at TensorFlow 2.5's versions: on the host, `edge-trash inspect BUNDLE/%s` names each op above "
            "them (export --edgetpu exits 4 on such a model); or run a newer interpreter: %s. (%s)"
            % (model_path, match.group(1), match.group(2), package, os.path.basename(model_path), newer,
               " ".join(message.split())))


def _make(module, model_path: str, delegates, num_threads: Optional[int]):
    kwargs = {"model_path": model_path}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if num_threads:
        kwargs["num_threads"] = num_threads
    interpreter = module.Interpreter(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


def load_interpreter(cpu_model: str, edgetpu_model: Optional[str] = None, device: Optional[str] = None,
                     use_edgetpu: bool = True, num_threads: Optional[int] = None,
                     import_module: Callable = importlib.import_module) -> LoadedInterpreter:
    """Load ``edgetpu_model`` on the Edge TPU if possible, else ``cpu_model`` on the CPU.

    ``device`` is libedgetpu's device string (``'usb:0'``, ``'pci:0'``, ``':0'``; None = first).
    Leave ``num_threads`` None: with more than one thread the postprocess op's per-class NMS
    drops whole classes (tensorflow/tensorflow#56058).
    Raises ``InterpreterError`` with an actionable message when neither can run.
    """
    module, package = _find_interpreter_module(import_module)
    warning = None
    if use_edgetpu and edgetpu_model and os.path.exists(edgetpu_model):
        options = {"device": device} if device else {}
        try:
            delegate = module.load_delegate(EDGETPU_LIBRARY, options)
        except ValueError as exc:  # "Failed to load delegate from libedgetpu.so.1"
            warning = ("No Edge TPU found (%s%s%s). Check that the TPU is connected and that this user may "
                       "access it (on a USB Accelerator: plug it in again; `ls /dev/apex_0` on the Dev "
                       "Board), and that libedgetpu is installed: %s."
                       % (exc, " for device %r" % device if device else "", _visible_tpus(import_module),
                          INSTALL_LIBEDGETPU))
        except (OSError, AttributeError) as exc:
            warning = "The Edge TPU library %s cannot be loaded (%s). Install it: %s." % (
                EDGETPU_LIBRARY, exc, INSTALL_LIBEDGETPU)
        else:
            try:
                return LoadedInterpreter(_make(module, edgetpu_model, [delegate], num_threads),
                                         "edgetpu", edgetpu_model, package)
            except (RuntimeError, ValueError) as exc:
                too_old = _runtime_too_old(str(exc)) or _ops_too_new(str(exc), edgetpu_model, package)
                if too_old:
                    raise RuntimeMismatchError(too_old)
                raise InterpreterError("The Edge TPU model %s failed to load on the TPU: %s" % (edgetpu_model, exc))
    elif use_edgetpu and edgetpu_model:
        warning = "The bundle has no Edge TPU model (%s)." % edgetpu_model
    if not os.path.exists(cpu_model):
        raise InterpreterError("The CPU model %s does not exist; the bundle is incomplete (re-run "
                               "`edge-trash export`)." % cpu_model)
    try:
        interpreter = _make(module, cpu_model, None, num_threads)
    except (RuntimeError, ValueError) as exc:  # ValueError: "not a valid Flatbuffer" (a file cut short)
        if "edgetpu-custom-op" in str(exc):
            raise InterpreterError(
                "%s is compiled for the Edge TPU (it contains edgetpu-custom-op) and cannot run without "
                "the %s delegate. Connect the TPU, or point the service at the plain int8 model "
                "(model_int8.tflite). (%s)" % (cpu_model, EDGETPU_LIBRARY, exc))
        too_new = _ops_too_new(str(exc), cpu_model, package)
        if too_new:
            raise RuntimeMismatchError(too_new)
        raise InterpreterError("%s failed to load: %s" % (cpu_model, exc))
    if warning is not None:
        warning += " RUNNING ON THE CPU: expect 10-30x slower inference than on the Edge TPU."
        LOG.warning("!" * 72)
        LOG.warning(warning)
        LOG.warning("!" * 72)
    return LoadedInterpreter(interpreter, "cpu", cpu_model, package, warning)


def describe_input(interpreter) -> dict:
    """The input tensor's shape, dtype name and quantization, for checks against the manifest."""
    detail = interpreter.get_input_details()[0]
    dtype = detail["dtype"]
    return {"shape": [int(v) for v in detail["shape"]],
            "dtype": getattr(dtype, "__name__", str(dtype)),
            "index": int(detail["index"]),
            "quantization": tuple(detail.get("quantization", (0.0, 0)))}
