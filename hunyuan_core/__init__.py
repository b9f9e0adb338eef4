"""hunyuan_core: Tencent Hunyuan-DiT for Python scripts, with no dependency on ComfyUI.

    import hunyuan_core as hy
    pipe = hy.load_pipeline("ckpts")              # official tree, diffusers folder or all-in-one file
    image = pipe("一只戴着墨镜的柴犬", seed=42).images[0]
"""

__version__ = "0.1.0"  # the release; pyproject.toml's [project] version says the same (tested)

from .adapters import IPAdapter, LoRA, apply_loras, convert_image_encoder, load_ip_adapter, load_lora
from .batch import render
from .controlnet import Control, ControlNet, PreparedControl, check_controlnet, load_controlnet, prepare_controls
from .errors import HunyuanError, InputError, ModelFileError, NumericsError, OutputError
from .loaders import load_dit, load_parts, load_text_encoder, load_vae
from .metadata import GenerationParams, read_params
from .pipeline import HunyuanDiTPipeline, PipelineOutput, load_pipeline
from .progress import set_loading_bar_config
from .rewriter import load_rewriter
from .sampling.image_prompt import ImagePrompt
from .sampling.sample import sample
from .sampling.schedulers import SAMPLERS
from .settings.sizes import PRESETS
from .upscaler import Upscaler, load_upscaler, upscale_images

__all__ = [
    "Control", "ControlNet", "PreparedControl", "check_controlnet", "load_controlnet", "prepare_controls",
    "GenerationParams", "HunyuanDiTPipeline", "HunyuanError", "IPAdapter", "ImagePrompt", "InputError", "LoRA", "ModelFileError", "NumericsError", "OutputError", "PRESETS",
    "PipelineOutput", "SAMPLERS",
    "Upscaler", "apply_loras", "convert_image_encoder", "load_dit", "load_ip_adapter", "load_lora", "load_parts", "load_pipeline", "load_rewriter", "load_text_encoder", "load_upscaler", "load_vae",
    "read_params", "render", "sample", "set_loading_bar_config", "upscale_images",
]
