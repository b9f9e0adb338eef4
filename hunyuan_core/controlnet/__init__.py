"""Hunyuan-DiT ControlNets: the model (:mod:`.model`), its files (:mod:`.files`), what a run asks for and the
hint's preparation (:mod:`.control`), the per-step runner of a sampling run (:mod:`.stack`) and the
training-time hint preprocessors (:mod:`.preprocess`)."""

from .control import RESIZE_MODES, Control, PreparedControl, check_control, decaying_strengths, prepare_controls
from .files import load_controlnet, save_controlnet
from .model import ControlNet, check_controlnet

__all__ = ["RESIZE_MODES", "Control", "ControlNet", "PreparedControl", "check_control", "check_controlnet",
           "decaying_strengths", "load_controlnet", "prepare_controls", "save_controlnet"]
