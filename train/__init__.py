"""Training: data loading, augmentation, the FPN, the loop and the threshold analysis (needs torch)."""
