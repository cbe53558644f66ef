"""Data: DOTA-format data sets, augmentation, letterbox, synthetic data, loaders."""
