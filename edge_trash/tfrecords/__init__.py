"""Data stage: COCO annotations and images in, validated TFRecords and dataset reports out."""
