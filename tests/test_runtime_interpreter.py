"""Interpreter loading: Edge TPU, CPU fallback, and each failure's message (fake packages)."""

import logging
import types

import pytest

from edge_trash.edge_runtime.interpreter import InterpreterError, RuntimeMismatchError, load_interpreter


class FakeTflite:
    """Stands in for tflite_runtime.interpreter / ai_edge_litert.interpreter."""

    def __init__(self, delegate_error=None, tpu_error=None, cpu_error=None):
        self.delegate_error, self.tpu_error, self.cpu_error = delegate_error, tpu_error, cpu_error
        self.delegate_calls = []
        module = self

        class Interpreter:
            def __init__(self, model_path, experimental_delegates=None, num_threads=None):
                self.model_path, self.delegates = model_path, experimental_delegates
                error = module.tpu_error if experimental_delegates else module.cpu_error
                if error is not None:
                    raise error

            def allocate_tensors(self):
                pass

        self.Interpreter = Interpreter

    def load_delegate(self, library, options=None):
        self.delegate_calls.append((library, options))
        if self.delegate_error is not None:
            raise self.delegate_error
        return "edgetpu-delegate"


def importer(modules):
    def import_module(name):
        if name in modules:
            return modules[name]
        raise ImportError("No module named %r" % name)
    return import_module


@pytest.fixture
def models(tmp_path):
    cpu, tpu = tmp_path / "model_int8.tflite", tmp_path / "model_int8_edgetpu.tflite"
    cpu.write_bytes(b"cpu")
    tpu.write_bytes(b"tpu")
    return str(cpu), str(tpu)


def test_edgetpu_model_runs_with_the_delegate(models):
    fake = FakeTflite()
    loaded = load_interpreter(*models, device="usb:0", import_module=importer({"tflite_runtime.interpreter": fake}))
    assert loaded.accelerator == "edgetpu" and loaded.warning is None and loaded.package == "tflite_runtime"
    assert loaded.interpreter.model_path == models[1] and loaded.interpreter.delegates == ["edgetpu-delegate"]
    assert fake.delegate_calls == [("libedgetpu.so.1", {"device": "usb:0"})]


def test_tflite_runtime_is_preferred_over_ai_edge_litert(models):
    first, second = FakeTflite(), FakeTflite()
    loaded = load_interpreter(*models, import_module=importer({"tflite_runtime.interpreter": first,
                                                               "ai_edge_litert.interpreter": second}))
    assert loaded.package == "tflite_runtime" and first.delegate_calls and not second.delegate_calls
    loaded = load_interpreter(*models, import_module=importer({"ai_edge_litert.interpreter": second}))
    assert loaded.package == "ai_edge_litert"


def test_no_tpu_falls_back_to_cpu_loudly(models, caplog):
    fake = FakeTflite(delegate_error=ValueError("Failed to load delegate from libedgetpu.so.1"))
    with caplog.at_level(logging.WARNING):
        loaded = load_interpreter(*models, import_module=importer({"ai_edge_litert.interpreter": fake}))
    assert loaded.accelerator == "cpu" and loaded.interpreter.model_path == models[0]
    assert "No Edge TPU found (Failed to load delegate from libedgetpu.so.1)" in loaded.warning
    assert "RUNNING ON THE CPU" in loaded.warning and "libedgetpu1-std" in loaded.warning
    assert "RUNNING ON THE CPU" in caplog.text


def test_no_tpu_message_lists_what_pycoral_sees(models):
    fake = FakeTflite(delegate_error=ValueError("Failed to load delegate from libedgetpu.so.1"))
    pycoral = types.SimpleNamespace(list_edge_tpus=lambda: [{"type": "pci", "path": "/dev/apex_0"}])
    loaded = load_interpreter(*models, device="usb:0", import_module=importer(
        {"tflite_runtime.interpreter": fake, "pycoral.utils.edgetpu": pycoral}))
    assert "for device 'usb:0'; pycoral sees these Edge TPUs: [{'type': 'pci', 'path': '/dev/apex_0'}]" \
        in loaded.warning


def test_missing_libedgetpu_library(models):
    fake = FakeTflite(delegate_error=OSError("libedgetpu.so.1: cannot open shared object file"))
    loaded = load_interpreter(*models, import_module=importer({"tflite_runtime.interpreter": fake}))
    assert loaded.accelerator == "cpu"
    assert "cannot be loaded (libedgetpu.so.1: cannot open shared object file). Install it: `sudo apt-get install " \
           "libedgetpu1-std`" in loaded.warning


def test_compiled_model_without_delegate_is_explained(models):
    fake = FakeTflite(delegate_error=ValueError("Failed to load delegate from libedgetpu.so.1"),
                      cpu_error=RuntimeError("Encountered unresolved custom op: edgetpu-custom-op.Node number 0 "
                                             "(edgetpu-custom-op) failed to prepare."))
    with pytest.raises(InterpreterError, match="is compiled for the Edge TPU .* cannot run without the "
                                               "libedgetpu.so.1 delegate"):
        load_interpreter(models[1], models[1], import_module=importer({"tflite_runtime.interpreter": fake}))


def test_runtime_too_old_says_how_to_update_or_recompile(models):
    fake = FakeTflite(tpu_error=RuntimeError(
        "Failed to prepare for TPU. Failed precondition: Package requires runtime version (14), which is newer "
        "than this runtime version (13).Node number 0 (EdgeTpuDelegateForCustomOp) failed to prepare."))
    with pytest.raises(RuntimeMismatchError, match=r"too old for this model \(model needs runtime 14, installed "
                                                   r"13\).*edgetpu_compiler -m 13"):
        load_interpreter(*models, import_module=importer({"tflite_runtime.interpreter": fake}))


@pytest.mark.parametrize("on_tpu", [True, False])
def test_an_op_newer_than_the_interpreter_says_to_update_it_or_export_again(models, on_tpu):
    """Retrying cannot mend it (RuntimeMismatchError: the service exits 78); TFLite's words run over lines."""
    said = ("Didn't find op for builtin opcode 'SOFTMAX' version '99'. An older version of this builtin might be "
            "supported. Are you using an old TFLite binary with a newer model?\nRegistration failed.\n")
    if on_tpu:
        fake, model = FakeTflite(tpu_error=ValueError(said)), models[1]
    else:
        fake = FakeTflite(delegate_error=ValueError("Failed to load delegate from libedgetpu.so.1"),
                          cpu_error=ValueError(said))
        model = models[0]
    with pytest.raises(RuntimeMismatchError) as info:
        load_interpreter(*models, import_module=importer({"tflite_runtime.interpreter": fake}))
    assert str(info.value) == (
        "%s needs TFLite's SOFTMAX op at version 99, which this interpreter (tflite_runtime) does not have. Coral's "
        "packages read ops at TensorFlow 2.5's versions: on the host, `edge-trash inspect BUNDLE/%s` names each op "
        "above them (export --edgetpu exits 4 on such a model); or run a newer interpreter: on Python 3.9 or later, "
        "`pip uninstall tflite-runtime && pip install ai-edge-litert` (this service prefers tflite_runtime when both "
        "are there). (Didn't find op for builtin opcode 'SOFTMAX' version '99'. An older version of this builtin "
        "might be supported. Are you using an old TFLite binary with a newer model? Registration failed.)"
        % (model, model.rsplit("/", 1)[1]))


def test_tflites_own_words_for_an_op_too_new_are_recognised(tmp_path):
    """The real interpreter's message, not only the fake's copy of it."""
    from conftest import SHARED
    from export_helpers import with_op_version

    source = SHARED / "edgetpu" / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    if not source.is_file():
        pytest.skip("%s not present" % source)
    newer = tmp_path / "model_int8.tflite"
    newer.write_bytes(with_op_version(source.read_bytes(), 25, 99))  # SOFTMAX
    import importlib

    def litert_only(name):  # the package this machine has, whatever else is installed beside it
        if not name.startswith("ai_edge_litert"):
            raise ImportError(name)
        return importlib.import_module(name)
    with pytest.raises(RuntimeMismatchError, match=r"needs TFLite's SOFTMAX op at version 99, which this "
                                                   r"interpreter \(ai_edge_litert\) does not have.*run a newer "
                                                   r"interpreter: `pip install -U ai-edge-litert`"):
        load_interpreter(str(newer), None, use_edgetpu=False, import_module=litert_only)


def test_no_interpreter_package_says_exactly_what_to_install(models):
    with pytest.raises(InterpreterError, match="sudo apt-get update && sudo apt-get install python3-pycoral.*"
                                               "pip install ai-edge-litert"):
        load_interpreter(*models, import_module=importer({}))


def test_cpu_only_bundle_and_missing_cpu_model(models, tmp_path):
    fake = FakeTflite()
    loaded = load_interpreter(models[0], str(tmp_path / "absent_edgetpu.tflite"),
                              import_module=importer({"tflite_runtime.interpreter": fake}))
    assert loaded.accelerator == "cpu" and "has no Edge TPU model" in loaded.warning and not fake.delegate_calls
    with pytest.raises(InterpreterError, match="absent.tflite does not exist; the bundle is incomplete"):
        load_interpreter(str(tmp_path / "absent.tflite"), None,
                         import_module=importer({"tflite_runtime.interpreter": fake}))


def test_a_cpu_model_the_runtime_cannot_parse_is_an_interpreter_error(models):
    """TFLite raises ValueError for a flatbuffer cut short; it was a traceback at start."""
    fake = FakeTflite(delegate_error=ValueError("Failed to load delegate from libedgetpu.so.1"),
                      cpu_error=ValueError("Model provided has model identifier 'x', should be 'TFL3'"))
    with pytest.raises(InterpreterError) as info:
        load_interpreter(models[0], models[1], import_module=importer({"tflite_runtime.interpreter": fake}))
    assert str(info.value) == ("%s failed to load: Model provided has model identifier 'x', should be 'TFL3'"
                               % models[0])
