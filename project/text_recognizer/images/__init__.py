"""Image operations shared by training-time augmentation and the synthetic datasets."""
