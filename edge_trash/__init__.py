"""edge-trash: COCO litter datasets to a waste sorter running on a Coral Edge TPU.

Stages, in the order an image travels: ``tfrecords`` (COCO in, TFRecords out),
``models`` (SSD MobileNet v2), ``train``, ``export`` (int8, Edge TPU) and
``edge_runtime`` (the service on the Dev Board).
"""

__version__ = "0.1.0"
