"""Every limit on what one call may ask for (sizes, seeds, guidance, steps, work, memory), in one place.

Each limit says why it is where it is; the checks that apply them live in ``validate.py`` (sampling) and
``upscaler/images.py`` (upscaling), so a request beyond them is refused before any work starts.
"""

from __future__ import annotations

# Image sides in pixels for the DiT: 64 px is 4x4 latent tokens; 4096 px is 4x the largest trained size.
MIN_SIZE, MAX_SIZE = 64, 4096

# ComfyUI's KSampler seed range; torch's CPU generator takes exactly 0 .. 2**64 - 1.
MAX_SEED = 2**64 - 1

# Guidance scale: ComfyUI's cfg maximum. The official default is 6; beyond ~30 every model saturates.
MAX_GUIDANCE = 100.0

# The schedule every release was trained on has 1000 timesteps (0..999). How many inference steps a
# sampler can spread over them is its own limit (checked by running each sampler at its limit):
# ddpm/ddim use "leading" spacing with steps_offset=1, so 1000 steps reach t = 1000, past the end of the
# table they index; the Euler samplers interpolate sigmas, so t = 1000 is fine but 1001 steps give a step
# ratio of 0; dpmms/unipc (and the other multistep solvers on their linspace spacing) space 1 + steps points
# over 0..999, which repeat (and divide by 0) from 1000 on; Karras sigmas are continuous and last up to 1000,
# as do the k-diffusion samplers (heun, dpm_2, lms, dpmpp_sde), which would interpolate further but gain
# nothing past one step per training timestep. LCM picks its steps from its 50 original ones.
TRAIN_TIMESTEPS = 1000
LCM_ORIGINAL_STEPS = 50
MAX_STEPS: dict[str, int] = {
    "ddpm": TRAIN_TIMESTEPS - 1,
    "ddim": TRAIN_TIMESTEPS - 1,
    "dpmms": TRAIN_TIMESTEPS - 1,
    "euler": TRAIN_TIMESTEPS,
    "euler_ancestral": TRAIN_TIMESTEPS,
    "unipc": TRAIN_TIMESTEPS - 1,
    "dpmpp_2m_karras": TRAIN_TIMESTEPS,
    "heun": TRAIN_TIMESTEPS,
    "dpm_2": TRAIN_TIMESTEPS,
    "dpm_2_ancestral": TRAIN_TIMESTEPS,
    "lms": TRAIN_TIMESTEPS,
    "dpmpp_2s_ancestral": TRAIN_TIMESTEPS,
    "dpmpp_sde": TRAIN_TIMESTEPS,
    "dpmpp_2m_sde": TRAIN_TIMESTEPS - 1,
    "dpmpp_3m_sde": TRAIN_TIMESTEPS - 1,
    "deis": TRAIN_TIMESTEPS - 1,
    "lcm": LCM_ORIGINAL_STEPS,
}

# IP-Adapter image scale (``i_scale``): the official default is 1 ("bigger: closer to the reference image");
# ComfyUI's IPAdapter nodes stop at 5, where the image branch already drowns the text.
MAX_IP_SCALE = 5.0

# Work per DiT forward: latent tokens x images x 2 with guidance. 2**20 is 4096 x 4096 px with batch 8, or
# 1024 x 1024 with batch 128; beyond it a step takes minutes even on the largest GPUs.
MAX_TOKEN_ROWS = 2**20
# Activations held during one DiT forward, in hidden-size tensors of one token row each: the long skips of
# the first half of the blocks, plus the working set of one block (qkv, attention out, MLP, norms).
BLOCK_WORKING_SET = 12

# Pixels of one image we open (decompression bombs are refused before decoding) or upscale to.
MAX_IMAGE_PIXELS = 256 * 1024 * 1024  # 16384 x 16384
# A side of an upscaled image: a panorama may be long, but no common format stores more than 65,535 px
# and an upscale beyond this is a typo in the scale (and gigabytes of float pixels).
MAX_UPSCALE_SIDE = 32768
# The factor a result may be resized to after super-resolution (ComfyUI's upscale node offers up to 16).
MAX_UPSCALE_FACTOR = 16.0

# Images one render job may ask for: a job is expanded to its items in memory before the first render, and
# "0:1000000000" in a seeds cell is a typo, not a dataset (a million 1024² PNGs are ~1.5 TB).
MAX_JOB_ITEMS = 1_000_000
