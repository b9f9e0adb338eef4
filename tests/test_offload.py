"""The one visit-the-compute-device mechanism (used by the rewriter's LLM and the ComfyUI nodes)."""

from __future__ import annotations

import pytest
import torch

from hunyuan_core.offload import CPU, visiting, weight_bytes, weight_device

GPU = torch.device("meta")  # stands in for a compute device: the carrier below records moves, it makes none


class Carrier:
    """An object carrying a module, like the text encoder; ``to`` records where it was sent."""

    def __init__(self):
        self.net = torch.nn.Linear(4, 3)  # 12 + 3 float32 weights = 60 bytes
        self.moves: list[torch.device] = []

    def to(self, device: torch.device) -> "Carrier":
        self.moves.append(device)
        return self


def test_a_visit_makes_room_moves_there_and_back_to_rest():
    carrier, room, released = Carrier(), [], []
    assert weight_bytes(carrier) == 60 and weight_device(carrier) == CPU
    with visiting(carrier, GPU, CPU, make_room=room.append, release=released.append) as device:
        assert device == GPU and carrier.moves == [GPU] and room == [60]
    assert carrier.moves == [GPU, CPU] and released == [GPU]


def test_without_a_rest_device_the_model_stays():
    carrier, released = Carrier(), []
    with visiting(carrier, GPU, None, release=released.append):
        pass
    assert carrier.moves == [GPU] and released == []


@pytest.mark.parametrize("rest", [None, CPU])
def test_an_error_or_interrupt_always_leaves_the_device(rest):
    for stop in (RuntimeError("out of memory"), KeyboardInterrupt()):
        carrier, released = Carrier(), []
        with pytest.raises(type(stop)):
            with visiting(carrier, GPU, rest, release=released.append):
                raise stop
        assert carrier.moves == [GPU, CPU] and released == [GPU]


def test_a_model_already_there_is_not_moved_and_needs_no_room():
    net, room = torch.nn.Linear(2, 2), []
    with visiting(net, CPU, CPU, make_room=room.append) as device:
        assert device == CPU
    assert room == [] and weight_device(net) == CPU
