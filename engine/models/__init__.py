"""Model definitions (HuMo DiT) and checkpoint key conversion."""
