"""Shared fixtures: small generated datasets built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """The built-in sample dataset with its planted problems (30 images)."""
    from edge_trash.tfrecords.sample_data import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("sample"), num_images=30, seed=0)


@pytest.fixture(scope="session")
def sample_build(sample_dataset, tmp_path_factory):
    """``build-tfrecords`` output of :func:`sample_dataset` and its report."""
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords

    out = tmp_path_factory.mktemp("tfrecords")
    report = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                          out=out, shard_size=8, seed=0))
    return out, report


@pytest.fixture(scope="session")
def color_model(tmp_path_factory):
    """A real int8 TFLite detector of pure red/green/blue cells (see runtime_fixtures), built once."""
    from runtime_fixtures import build_color_detector

    return build_color_detector(str(tmp_path_factory.mktemp("runtime_model") / "model_int8.tflite"))
