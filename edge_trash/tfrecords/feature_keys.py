"""TFRecord feature keys, defined once (TF Object Detection API / Model Garden schema).

Model Garden's ``official.vision.dataloaders.tf_example_decoder.TfExampleDecoder``
reads records written with these keys unchanged.
"""

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
SOURCE_ID = "image/source_id"
KEY_SHA256 = "image/key/sha256"

BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMAX = "image/object/bbox/ymax"
CLASS_LABEL = "image/object/class/label"  # 1-based; 0 is background
CLASS_TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
AREA = "image/object/area"  # in pixels of the encoded (possibly shrunk) image

BACKGROUND_ID = 0
