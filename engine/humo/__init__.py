"""HuMo generation: variants, the DiT (a diffusers subclass), text/audio/VAE conditions, guidance, sampler, pipeline."""
