"""The real file layouts a user has on disk (official tree, diffusers folder, ComfyUI all-in-one file, DiT-only
file): reading tensors safely, naming a wrong file, key names, where each part lives, and writing each layout."""
