"""The real file layouts a user has on disk, one module each (official tree, diffusers folder, ComfyUI all-in-one
file, DiT-only file, two text encoder files) with its reader, writer and key names; detection of a layout, once
(``layouts``); safe tensor reading (``files``), naming a wrong file (``kinds``), DiT key maps (``keys``); building the
text encoders and the VAE from what a reader found (``text_encoder_files``, ``vae_files``)."""
