"""Training: input pipeline, class-balanced augmentation, the training loop, evaluation."""
