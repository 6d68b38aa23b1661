"""Geometry value types, pre-processing and decoding of the postprocess outputs (pure numpy)."""

import numpy as np
import pytest

from edge_trash.edge_runtime.decode import DecodeError, OutputReader, Preprocessor, decode_detections
from edge_trash.edge_runtime.geometry import BBox, Detection
from runtime_fixtures import LABELS, FakeInterpreter


@pytest.mark.parametrize("a, b, expected", [
    (BBox(0, 0, 10, 10), BBox(0, 0, 10, 10), 1.0),
    (BBox(0, 0, 10, 10), BBox(5, 0, 15, 10), 50 / 150),
    (BBox(0, 0, 10, 10), BBox(10, 10, 20, 20), 0.0),
    (BBox(0, 0, 10, 10), BBox(20, 20, 30, 30), 0.0),
])
def test_bbox_iou_table(a, b, expected):
    assert BBox.iou(a, b) == pytest.approx(expected)
    assert BBox.iou(b, a) == pytest.approx(expected)


def test_bbox_scale_translate_clip_and_validity():
    box = BBox(1, 2, 3, 5)
    assert box.scale(2, 10) == BBox(2, 20, 6, 50)
    assert box.translate(-1, 1) == BBox(0, 3, 2, 6)
    assert BBox(-5, -5, 50, 50).clip(40, 30) == BBox(0, 0, 40, 30)
    assert box.center == (2.0, 3.5)
    assert not BBox(3, 0, 1, 1).valid and BBox(3, 0, 1, 1).area == 0.0


def test_stretch_preprocess_maps_boxes_back_to_frame_pixels():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[120:240, 320:480] = [255, 0, 0]
    pre = Preprocessor(64, 64, "stretch", use_cv2=False)
    tensor = pre(frame)
    assert tensor.shape == (1, 64, 64, 3) and tensor.dtype == np.uint8
    red = np.argwhere(tensor[0, :, :, 0] == 255)
    assert red.min(0).tolist() == [16, 32] and red.max(0).tolist() == [31, 47]
    assert pre.to_frame(0.25, 0.5, 0.5, 0.75) == BBox(320.0, 120.0, 480.0, 240.0)
    assert frame[120, 320, 0] == 255  # the input frame is untouched


def test_letterbox_keeps_aspect_and_undoes_the_padding():
    frame = np.full((240, 640, 3), 7, np.uint8)
    pre = Preprocessor(64, 64, "letterbox", pad_value=0)
    tensor = pre(frame)[0]
    # 640x240 -> 64x24, centred vertically: rows 20..43 are the frame, the rest padding
    assert (tensor[:20] == 0).all() and (tensor[44:] == 0).all() and (tensor[20:44] == 7).all()
    # the model box covering exactly the image area maps to the whole frame
    assert pre.to_frame(20 / 64, 0.0, 44 / 64, 1.0) == BBox(0.0, 0.0, 640.0, 240.0)
    # a box in the padding is clipped to the frame
    assert pre.to_frame(0.0, 0.0, 0.1, 0.1).area == 0.0


@pytest.mark.parametrize("shape, size, mode", [((480, 640), 320, "stretch"), ((480, 640), 300, "letterbox"),
                                                ((32, 64), 64, "stretch"), ((100, 37), 64, "letterbox")])
def test_opencv_and_numpy_resizing_give_the_same_input(shape, size, mode):
    """Bilinear both (OpenCV's fixed-point weights round a value here and there the other way: within 1)."""
    pytest.importorskip("cv2")
    frame = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    with_cv2 = Preprocessor(size, size, mode, use_cv2=True)(frame).copy()
    numpy_only = Preprocessor(size, size, mode, use_cv2=False)(frame)
    differ = np.abs(with_cv2.astype(int) - numpy_only.astype(int))
    assert differ.max() <= 1 and differ.mean() < 0.2


@pytest.mark.parametrize("shape", [(480, 640), (1080, 1920), (300, 300)])
def test_the_device_resizes_frames_as_training_and_evaluate_do(shape):
    """The device resized nearest-neighbour while training and `edge-trash evaluate` resize bilinear: the model
    met inputs it never saw, and the AP measured on the host (0.885 on a train split) was not the device's
    (0.716 on the same images through the device's resize)."""
    pytest.importorskip("cv2")
    from edge_trash.train.augment import stretch_resize

    frame = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    np.testing.assert_array_equal(Preprocessor(320, 320, "stretch", use_cv2=True)(frame)[0],
                                  stretch_resize(frame, 320))


def test_preprocess_rejects_wrong_frames_and_modes():
    with pytest.raises(ValueError, match="resize mode 'crop' is not one of stretch, letterbox"):
        Preprocessor(8, 8, "crop")
    with pytest.raises(ValueError, match="expected an HxWx3 uint8 RGB frame, got shape \\(4, 4\\)"):
        Preprocessor(8, 8)(np.zeros((4, 4), np.uint8))


def _run(fake, image):
    pre = Preprocessor(fake.input_size, fake.input_size)
    fake.set_tensor(0, pre(image).copy())
    fake.invoke()
    return pre


@pytest.mark.parametrize("with_signature, source", [(True, "signature"), (False, "tf1-order")])
def test_output_reader_by_signature_and_by_tf1_order(with_signature, source):
    fake = FakeInterpreter(with_signature=with_signature)
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:16, 40:56, 2] = 153  # one blue blob, score 0.6
    pre = _run(fake, image)
    reader = OutputReader(fake)
    assert reader.source == source
    count, scores, classes, boxes = reader.read()
    assert count == 1 and classes[0] == 2 and scores[0] == pytest.approx(0.6)
    dets = decode_detections(count, scores, classes, boxes, LABELS, pre, 0.3)
    assert dets == [Detection(2, "carton", pytest.approx(0.6), BBox(40.0, 8.0, 56.0, 16.0))]
    assert decode_detections(count, scores, classes, boxes, LABELS, pre, 0.61) == []


class _TF2Order:
    """Outputs listed scores, boxes, count, classes and no signature."""

    def __init__(self):
        self.tensors = {0: np.array([[0.9, 0.0]], np.float32), 1: np.array([[[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]]], np.float32),
                        2: np.array([1.0], np.float32), 3: np.array([[1.0, 0.0]], np.float32)}

    def get_output_details(self):
        return [{"index": i, "shape": np.array(t.shape)} for i, t in self.tensors.items()]

    def get_tensor(self, index):
        return self.tensors[index]


def test_output_reader_tf2_order():
    reader = OutputReader(_TF2Order())
    assert reader.source == "tf2-order"
    count, scores, classes, boxes = reader.read()
    assert (count, float(scores[0]), float(classes[0])) == (1, pytest.approx(0.9), 1.0)
    assert boxes[0].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_output_reader_names_model_garden_signature_problem():
    fake = FakeInterpreter()
    fake._get_full_signature_list = lambda: {"serving_default": {"outputs": {
        "detection_boxes": 10, "detection_classes": 11, "detection_scores": 12, "num_detections": 13}}}
    with pytest.raises(DecodeError, match="needs \\['output_0', 'output_1', 'output_2', 'output_3'\\]"):
        OutputReader(fake)


def test_decode_rejects_class_outside_labels():
    pre = Preprocessor(8, 8)
    pre(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DecodeError, match="class index 5 but labels.txt has 3 classes"):
        decode_detections(1, np.array([0.9]), np.array([5.0]), np.array([[0, 0, 1, 1]]), LABELS, pre, 0.3)


def test_make_input_keeps_each_frames_own_mapping():
    pre = Preprocessor(64, 64, "stretch")
    tensor_a, mapping_a = pre.make_input(np.zeros((480, 640, 3), np.uint8))
    tensor_b, mapping_b = pre.make_input(np.full((100, 200, 3), 9, np.uint8))  # another size
    assert (tensor_a == 0).all() and (tensor_b == 9).all()  # copies, not the shared buffer
    assert mapping_a.to_frame(0.5, 0.5, 1.0, 1.0) == BBox(320.0, 240.0, 640.0, 480.0)
    assert mapping_b.to_frame(0.5, 0.5, 1.0, 1.0) == BBox(100.0, 50.0, 200.0, 100.0)


def test_one_box_per_item_keeps_the_best_of_overlapping_classes():
    from edge_trash.edge_runtime.decode import one_box_per_item
    from edge_trash.edge_runtime.geometry import BBox, Detection

    can = Detection(1, "can", 0.7, BBox(10, 10, 50, 50))
    cup_same_item = Detection(3, "cup", 0.4, BBox(12, 11, 51, 52))  # IoU ~0.88 with the can
    can_neighbour = Detection(1, "can", 0.6, BBox(40, 40, 80, 80))  # IoU ~0.06: another item
    kept = one_box_per_item([can, can_neighbour, cup_same_item])
    assert kept == [can, can_neighbour]
    assert one_box_per_item([]) == []
    assert one_box_per_item([can, cup_same_item], iou_threshold=0.95) == [can, cup_same_item]
