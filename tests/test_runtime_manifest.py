"""Bundle manifest: build/write round trip and every verification failure."""

import json
import os

import pytest

from edge_trash.edge_runtime.manifest import BundleError, build_manifest, verify_bundle, write_manifest
from runtime_fixtures import make_bundle

INPUT = {"shape": [1, 64, 64, 3], "dtype": "uint8"}


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(str(tmp_path / "bundle"))


def test_manifest_lists_every_file_with_sha256_and_size(bundle):
    import hashlib
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert sorted(manifest["files"]) == ["labels.txt", "model_int8.tflite", "sort.yaml"]
    data = open(os.path.join(bundle, "labels.txt"), "rb").read()
    assert manifest["files"]["labels.txt"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert manifest["output_names"] == ["output_0", "output_1", "output_2", "output_3"]
    assert manifest["output_order"] == ["count", "scores", "classes", "boxes"]
    assert manifest["num_classes"] == 3
    result = verify_bundle(bundle, INPUT)
    assert result["labels"] == ["bottle", "can", "carton"] and result["modified_config"] == []


def test_write_manifest_is_atomic_and_ignores_itself(bundle):
    first = build_manifest(bundle, {"x": 1})
    write_manifest(bundle, {"x": 1})
    assert build_manifest(bundle, {"x": 1}) == first
    assert not [n for n in os.listdir(bundle) if n.startswith(".")]  # no temporary file left
    # the installer copies the bundle as root; the service (user edge-trash) must still read the manifest
    assert os.stat(os.path.join(bundle, "manifest.json")).st_mode & 0o777 == 0o644


def test_tampered_model_is_named(bundle):
    with open(os.path.join(bundle, "model_int8.tflite"), "ab") as f:
        f.write(b"!")
    with pytest.raises(BundleError, match="model_int8.tflite does not match the manifest"):
        verify_bundle(bundle)


def test_same_size_tampering_is_caught_by_sha256(bundle):
    path = os.path.join(bundle, "labels.txt")
    data = open(path, "rb").read()
    open(path, "wb").write(data.replace(b"can", b"cup"))
    with pytest.raises(BundleError, match="labels.txt does not match the manifest"):
        verify_bundle(bundle)


def test_missing_file_and_missing_manifest(bundle, tmp_path):
    os.unlink(os.path.join(bundle, "labels.txt"))
    with pytest.raises(BundleError, match="labels.txt is listed in the manifest but missing"):
        verify_bundle(bundle)
    empty = str(tmp_path / "empty")
    os.mkdir(empty)
    with pytest.raises(BundleError) as err:
        verify_bundle(empty)
    assert str(err.value) == ("%s/manifest.json is missing: %s is not an exported bundle (create one with "
                              "`edge-trash export --model RUN --data DATA --out BUNDLE` and give --bundle BUNDLE)"
                              % (empty, empty))
    run = str(tmp_path / "run")  # a run folder of `edge-trash train`, given before its export
    os.mkdir(run)
    open(os.path.join(run, "config.json"), "w").close()
    with pytest.raises(BundleError) as err:
        verify_bundle(run)
    assert str(err.value) == ("%s/manifest.json is missing: %s is a training run, not an exported bundle; export "
                              "it (edge-trash export --model %s --data DATA --out BUNDLE) and give --bundle BUNDLE"
                              % (run, run, run))


def test_edited_sort_yaml_is_reported_not_fatal(bundle):
    with open(os.path.join(bundle, "sort.yaml"), "a") as f:
        f.write("\n")
    assert verify_bundle(bundle)["modified_config"] == ["sort.yaml"]
    # removed: --config names the operator's copy elsewhere (it was 'listed in the manifest but missing', exit 78)
    os.unlink(os.path.join(bundle, "sort.yaml"))
    assert verify_bundle(bundle)["modified_config"] == ["sort.yaml"]


def test_labels_count_vs_model_classes(tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle)
    with open(os.path.join(bundle, "labels.txt"), "w") as f:
        f.write("bottle\ncan\n")
    write_manifest(bundle, {"class_names": ["bottle", "can", "carton"], "input_shape": [1, 64, 64, 3]})
    with pytest.raises(BundleError, match="labels.txt has 2 classes .* but the manifest's model has 3 classes"):
        verify_bundle(bundle)


def test_input_shape_and_type_vs_model(bundle):
    with pytest.raises(BundleError, match=r"input tensor is \[1, 320, 320, 3\] but the manifest says input_shape "
                                          r"\[1, 64, 64, 3\]"):
        verify_bundle(bundle, {"shape": [1, 320, 320, 3], "dtype": "uint8"})
    with pytest.raises(BundleError, match="input tensor is float32 but the manifest says input_dtype uint8"):
        verify_bundle(bundle, {"shape": [1, 64, 64, 3], "dtype": "float32"})



def test_a_manifest_being_written_is_not_listed_and_a_failed_write_leaves_nothing(bundle, monkeypatch):
    from edge_trash.edge_runtime import files

    leftover = os.path.join(bundle, ".manifest.json.abc123.tmp")  # a writer killed before its rename
    with open(leftover, "w") as f:
        f.write("{")
    assert sorted(build_manifest(bundle, {})["files"]) == ["labels.txt", "model_int8.tflite", "sort.yaml"]
    os.unlink(leftover)

    class FullDisk:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", FullDisk)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomically(os.path.join(bundle, "x.json"), b"data")
    monkeypatch.undo()
    assert sorted(os.listdir(bundle)) == ["labels.txt", "manifest.json", "model_int8.tflite", "sort.yaml"]


def test_a_bundle_file_the_service_cannot_read_is_named_with_the_fix(bundle, monkeypatch):
    """An unreadable model (a bundle root copied with mode 0600) was a PermissionError traceback at start."""
    from edge_trash.edge_runtime import manifest as manifest_lib

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(manifest_lib, "_sha256", refuse)
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle)
    assert str(info.value) == (
        "cannot read %s (Permission denied): make the bundle readable by the user the service runs as (sudo chmod -R "
        "a+rX %s), or copy it again" % (os.path.join(bundle, "labels.txt"), bundle))


@pytest.mark.parametrize("field, value, problem", [
    ("files", {"labels.txt": "abc"}, "files['labels.txt'] is 'abc', not {\"sha256\": ..., \"size\": ...}"),
    ("files", {"labels.txt": {"sha256": "00", "size": "12"}},
     "files['labels.txt'] is {'sha256': '00', 'size': '12'}, not {\"sha256\": ..., \"size\": ...}"),
    ("num_classes", "three", "num_classes is 'three', not a whole number"),
    ("class_names", 5, "class_names is 5, not a list of class names"),
    ("input_shape", [1, "64", 64, 3], "input_shape is [1, '64', 64, 3], not a list of whole numbers"),
])
def test_a_hand_damaged_manifest_is_named_not_a_traceback(bundle, field, value, problem):
    """These were a TypeError / ValueError traceback from verify_bundle (exit 1, restarted for ever)."""
    path = os.path.join(bundle, "manifest.json")
    manifest = json.load(open(path))
    manifest[field] = value
    with open(path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, INPUT)
    assert str(info.value) == ("%s: %s: the manifest was edited or damaged; copy manifest.json from the export "
                               "again (or re-export the bundle)" % (path, problem))
