"""Training: contrastive LoRA (the DiffEmbed recipe) and masked-diffusion adaptation."""
