"""Model definition: SSD MobileNet v2, anchors, targets, label maps."""
