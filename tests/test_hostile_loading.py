"""Hostile model files (issue 8, "loading" slice): every malformed, unsafe or wrong file is a ModelFileError (or a
NumericsError for NaN/Inf weights) that names the file and what is wrong; nothing is read from outside the model's
folder and nothing touches the network.

1. safetensors headers (and a property-style fuzz of the parser)   4. configs that diffusers would read as repo ids
2. weights that must be refused, tokenizers, unreadable files      5. the ComfyUI Checkpoint / Text Encoder loaders
3. paths a model file names that leave its folder
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from comfy_host import require_comfyui, run_node
from comfy_models import DIT_ONLY, VAE_FILE, tiny_models
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import hunyuan_core as hy
from hunyuan_core.errors import ModelFileError, NumericsError
from hunyuan_core.formats import files as files_module
from hunyuan_core.formats.files import read_checkpoint

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def safetensors_bytes(header: object, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    """A safetensors file from any header (a JSON value, or raw bytes for non-JSON/non-UTF-8 headers)."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def dit_sd(tiny_official):
    return {k: v.contiguous() for k, v in hy.load_dit(tiny_official, device="cpu").state_dict().items()}


def copy_model(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copytree(src, dest)
    return dest


# ------------------------------------------------------------------------------ 1. safetensors headers
F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
DEEP = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
HEADER_DEFECTS = {
    "entry is not an object": (safetensors_bytes({"w": 5}), r"entry 'w' is 5; expected an object with dtype"),
    "entry is a list": (safetensors_bytes({"w": [1, 2]}), r"entry 'w' is \[1, 2\]; expected an object"),
    "no data_offsets": (safetensors_bytes({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)), r"'w' lacks data_offsets"),
    "no dtype or shape": (safetensors_bytes({"w": {"data_offsets": [0, 8]}}, bytes(8)), r"'w' lacks dtype, shape"),
    "unknown dtype": (safetensors_bytes({"w": {**F32, "dtype": "F128"}}, bytes(8)), r"'w' has dtype 'F128'; expected one of"),
    "negative shape": (safetensors_bytes({"w": {**F32, "shape": [-2]}}, bytes(8)), r"shape \[-2\]; expected a list of non-negative"),
    "offsets backwards": (safetensors_bytes({"w": {**F32, "data_offsets": [8, 0]}}, bytes(8)), r"data_offsets \[8, 0\]"),
    "offsets out of range": (safetensors_bytes({"w": {**F32, "data_offsets": [1 << 40, (1 << 40) + 8]}}, bytes(8)),
                             r"truncated: its header describes"),
    "size does not match shape": (safetensors_bytes({"w": {**F32, "data_offsets": [0, 4]}}, bytes(8)),
                                  r"\(F32 \[2\]\) needs 8 bytes but its data_offsets span 4"),
    "overlapping tensors": (safetensors_bytes({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, bytes(12)),
                            r"tensors 'a' and 'b' overlap"),
    "duplicate names": (safetensors_bytes(None, bytes(8), raw_header=b'{"w":' + json.dumps(F32).encode() + b',"w":'
                                          + json.dumps(F32).encode() + b"}"), r"duplicate key 'w'"),
    "not UTF-8": (safetensors_bytes(None, bytes(8), raw_header=b'{"w\xff":' + json.dumps(F32).encode() + b"}"),
                  r"header is not UTF-8 text"),
    "nested 100,000 deep": (safetensors_bytes(None, raw_header=DEEP), r"nested too deeply"),
    "header is a list": (safetensors_bytes([1, 2, 3]), r"header is \[1, 2, 3\]; expected an object of tensors"),
    "metadata not an object": (safetensors_bytes({"__metadata__": 3}), r"__metadata__ is not an object"),
    "header length beyond the file": (struct.pack("<Q", 5_000) + b'{"w": 1}', r"truncated: its header alone needs 5,008"),
    "header length beyond the format": (struct.pack("<Q", 1 << 62) + b"{}", r"exceeds the format's limit"),
}


@pytest.mark.parametrize("case", sorted(HEADER_DEFECTS))
def test_malformed_safetensors_header_is_a_model_file_error_naming_file_and_defect(case, tmp_path):
    content, reason = HEADER_DEFECTS[case]
    path = write(tmp_path / "bad.safetensors", content)
    for load in (hy.load_dit, read_checkpoint):
        with pytest.raises(ModelFileError, match=reason) as err:
            load(path)
        assert str(path) in str(err.value)


def test_header_is_parsed_once_by_one_parser(dit_sd, tmp_path, monkeypatch):
    """One parser decides what a file holds: no second reading of the header by another library with other rules."""
    import safetensors
    import safetensors.torch

    path = tmp_path / "dit.safetensors"
    save_file(dit_sd, path)
    parses = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda s, *a, **kw: parses.append(1) or real_loads(s, *a, **kw))

    def second_parser(*args, **kwargs):
        raise AssertionError("the header was parsed a second time by safetensors")

    monkeypatch.setattr(safetensors, "safe_open", second_parser)
    monkeypatch.setattr(safetensors.torch, "safe_open", second_parser)
    loaded = read_checkpoint(path)
    assert len(parses) == 1
    assert loaded.keys() == dit_sd.keys() and all(torch.equal(loaded[k], dit_sd[k]) for k in dit_sd)


def test_unaligned_tensors_and_every_dtype_read_back_exactly(tmp_path):
    """Tensors are views of the mapped file; one whose offset is not a multiple of its item size is copied."""
    tensors = {"u8": torch.arange(3, dtype=torch.uint8), "f32": torch.randn(2, 3), "bf16": torch.randn(5).bfloat16(),
               "i64": torch.arange(4), "b": torch.tensor([True, False]), "scalar": torch.tensor(2.5)}
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, path)
    loaded = read_checkpoint(path)
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in tensors.items())


def _valid_tiny_file() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16),
                   "c": torch.zeros(0)}, path, metadata={"format": "pt"})
        return path.read_bytes()


VALID = _valid_tiny_file()
_fuzz_dir = Path(tempfile.mkdtemp(prefix="hostile_fuzz_"))
atexit.register(shutil.rmtree, _fuzz_dir, ignore_errors=True)
_fuzz_count = [0]


def read_fuzzed(content: bytes) -> None:
    """Read ``content`` as a .safetensors file: a ModelFileError or tensors that can all be read in full."""
    _fuzz_count[0] += 1
    path = _fuzz_dir / f"{_fuzz_count[0]}.safetensors"  # a fresh name: earlier tensors may still map older files
    path.write_bytes(content)
    try:
        loaded = read_checkpoint(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        return
    for t in loaded.values():
        t.clone()  # touches every byte: would crash if a view reached past the file


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(content):
    read_fuzzed(content)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(1, len(VALID)))
def test_fuzz_mutated_valid_file(flips, length):
    data = bytearray(VALID)
    for index, value in flips:
        data[index] = value
    read_fuzzed(bytes(data[:length]))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "C64", "Q4"]) | JSON,
    "shape": st.lists(st.integers(-1, 5), max_size=3) | JSON,
    "data_offsets": st.lists(st.integers(-1, 80), min_size=2, max_size=2) | JSON,
})


@FUZZ
@given(st.dictionaries(st.text(max_size=6), ENTRY | JSON, max_size=4), st.integers(0, 96))
def test_fuzz_structured_headers(header, data_len):
    read_fuzzed(safetensors_bytes(header, bytes(range(256))[:data_len]))


# --------------------------------------------------------------------------- 2. weights that must be refused
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.complex64, torch.bool])
def test_non_float_dit_weights_are_refused(dit_sd, tmp_path, dtype):
    path = tmp_path / "dit.pt"
    torch.save({k: v.to(dtype) for k, v in dit_sd.items()}, path)
    with pytest.raises(ModelFileError, match=rf"weight '\S+' is stored as {dtype}; expected floating-point weights"):
        hy.load_dit(path)


def test_all_empty_tensors_are_refused(dit_sd, tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({k: torch.zeros(0) for k in dit_sd}, path)
    with pytest.raises(ModelFileError, match=rf"'{path}': all {len(dit_sd)} weight tensors are empty"):
        hy.load_dit(path)


def test_first_dit_key_with_wrong_shape_names_the_tensor(dit_sd):
    with pytest.raises(ModelFileError, match=r"tensor 'x_embedder.proj.weight' has shape \[3\]; expected 4 non-zero"):
        hy.load_dit({**dit_sd, "x_embedder.proj.weight": torch.zeros(3)})
    with pytest.raises(ModelFileError, match=r"'blocks.0.attn1.q_norm.weight' has shape \[0\]"):
        hy.load_dit({**dit_sd, "blocks.0.attn1.q_norm.weight": torch.zeros(0)})


SHAPE_KEYS = ["x_embedder.proj.weight", "blocks.0.attn1.q_norm.weight", "pooler.positional_embedding",
              "pooler.c_proj.weight", "extra_embedder.0.weight", "text_embedding_padding", "final_layer.linear.weight",
              "mlp_t5.0.weight", "blocks.0.mlp.fc1.weight"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SHAPE_KEYS), st.lists(st.integers(0, 40), max_size=5))
@example("pooler.positional_embedding", [2, 32])
def test_fuzz_dit_shapes_give_a_model_file_error_or_the_model(dit_sd, key, shape):
    """A tensor of another shape is refused as a model-file error, or it describes another architecture that the
    model is then built to (``pooler.positional_embedding`` with 2 rows is a DiT reading 1 mT5 token)."""
    sd = {**dit_sd, key: torch.zeros(shape)}
    try:
        model = hy.load_dit(sd, device="cpu")
    except ModelFileError:
        return
    assert list(model.state_dict()[key].shape) == list(shape)


def _poison(path: Path, name: str, value: float) -> None:
    """Put ``value`` into the tensor ``name`` of a weights file."""
    sd = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    sd = {k: v.clone() for k, v in sd.items()}
    sd[name].view(-1)[0] = value
    save_file(sd, path) if path.suffix == ".safetensors" else torch.save(sd, path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_raise_numerics_error_naming_the_tensor(tiny_official, tmp_path, value):
    model = copy_model(tiny_official, tmp_path)
    t2i = model / "t2i"
    cases = [  # (loader, file, tensor in the file, its name in the model)
        (hy.load_dit, "model/pytorch_model_ema.pt", "mlp_t5.0.weight", "mlp_t5.0.weight"),
        (hy.load_vae, "sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors", "decoder.conv_in.weight", None),
        (hy.load_text_encoder, "clip_text_encoder/pytorch_model.bin", "bert.encoder.layer.0.output.dense.weight",
         "encoder.layer.0.output.dense.weight"),
        (hy.load_text_encoder, "mt5/pytorch_model.bin", "encoder.block.0.layer.0.SelfAttention.q.weight", None),
    ]
    for load, rel, name, model_name in cases:
        weights = t2i / rel
        backup = weights.read_bytes()
        _poison(weights, name, value)
        with pytest.raises(NumericsError, match=rf"weight '{model_name or name}' holds NaN or Inf values"):
            load(model, device="cpu")
        weights.write_bytes(backup)


def test_values_that_overflow_the_load_dtype_are_caught(dit_sd):
    with pytest.raises(NumericsError, match=r"'mlp_t5.0.weight' holds NaN or Inf values \(as float16\)"):
        hy.load_dit({**dit_sd, "mlp_t5.0.weight": dit_sd["mlp_t5.0.weight"] + 1e6}, device="cpu", dtype=torch.float16)


def test_garbage_spiece_model_and_empty_vocab_are_refused(tiny_official, tmp_path):
    model = copy_model(tiny_official, tmp_path)
    spiece = model / "t2i" / "mt5" / "spiece.model"
    good = spiece.read_bytes()
    spiece.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ModelFileError, match=rf"'{spiece}' is not a sentencepiece model"):
        hy.load_text_encoder(model, device="cpu")
    spiece.write_bytes(good)
    vocab = model / "t2i" / "tokenizer" / "vocab.txt"
    for content, reason in (("", "is empty"), ("a\nb\n", r"lacks \[PAD\], \[UNK\], \[CLS\], \[SEP\]")):
        vocab.write_text(content)
        with pytest.raises(ModelFileError, match=rf"'{vocab}' {reason}; expected a BERT vocab.txt"):
            hy.load_text_encoder(model, device="cpu")


def test_garbage_spiece_in_an_all_in_one_file_is_refused(tiny_comfy, tiny_bert_vocab, tmp_path):
    sd = load_file(tiny_comfy)
    sd["text_encoders.mt5xl.spiece_model"] = torch.frombuffer(bytearray(b"not a model" * 9), dtype=torch.uint8)
    path = tmp_path / "aio.safetensors"
    save_file(sd, path)
    with pytest.raises(ModelFileError, match=r"'text_encoders.mt5xl.spiece_model' is not a sentencepiece model"):
        hy.load_text_encoder(path, device="cpu", bert_vocab=tiny_bert_vocab)


def _deny(monkeypatch, target: Path) -> None:
    """Make ``target`` unreadable at the OS boundary, as ``chmod 000`` does for other users: opening or listing
    it fails, and so does looking at anything inside it (the tests run as root, where chmod stops nothing)."""
    target = os.fspath(target)

    def guarded(real, inside: bool):
        def call(path, *args, **kwargs):
            name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
            if name is not None and (name.startswith(target + os.sep) if inside else name == target):
                raise PermissionError(13, "Permission denied", name)
            return real(path, *args, **kwargs)
        return call

    for module, name, inside in ((io, "open", False), (os, "listdir", False), (os, "scandir", False), (os, "stat", True)):
        monkeypatch.setattr(module, name, guarded(getattr(module, name), inside))


def test_unreadable_model_file_or_folder_is_a_model_file_error(tiny_official, dit_sd, tmp_path, monkeypatch):
    path = tmp_path / "dit.safetensors"
    save_file(dit_sd, path)
    pt = tmp_path / "dit.pt"
    torch.save(dit_sd, pt)
    model = copy_model(tiny_official, tmp_path)
    folder = model / "t2i" / "mt5"
    with monkeypatch.context() as m:
        _deny(m, path)
        _deny(m, pt)
        _deny(m, folder)
        for target, load in ((path, hy.load_dit), (pt, hy.load_dit), (folder, hy.load_text_encoder)):
            with pytest.raises(ModelFileError, match=rf"cannot read '{target}\S*': Permission denied"):
                load(model if load is hy.load_text_encoder else target, device="cpu")


# ---------------------------------------------------------------------- 3. paths that leave the model folder
@pytest.mark.parametrize("escape", ["../../elsewhere/{}", "/{elsewhere}/{}"])
def test_shard_index_cannot_point_outside_the_model_folder(tiny_diffusers, tmp_path, escape):
    model = copy_model(tiny_diffusers, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = model / "text_encoder_2"
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    for shard in set(index["weight_map"].values()):
        shutil.move(folder / shard, elsewhere / shard)
    index["weight_map"] = {k: escape.format(v, elsewhere=str(elsewhere).lstrip("/")) for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match=rf"shard index '{index_path}': names the file .*, which is not inside"):
        hy.load_text_encoder(model, device="cpu")


def test_tokenizer_config_cannot_make_the_tokenizer_read_files_outside_the_folder(tiny_diffusers, tmp_path):
    """A ``*_file`` entry naming a file elsewhere is dropped: the folder's own files are read, never that one."""
    own = hy.load_text_encoder(tiny_diffusers, device="cpu").bert_tokenizer.get_vocab()
    model = copy_model(tiny_diffusers, tmp_path)
    cfg_path = model / "tokenizer" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    elsewhere = tmp_path / "elsewhere_vocab.txt"
    elsewhere.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "stolen"]) + "\n")
    for name in ("../../../elsewhere_vocab.txt", str(elsewhere)):
        cfg_path.write_text(json.dumps({**cfg, "vocab_file": name}))
        assert hy.load_text_encoder(model, device="cpu").bert_tokenizer.get_vocab() == own


def test_tokenizer_saved_with_the_authors_absolute_paths_loads(tiny_diffusers, tmp_path):
    """Older transformers wrote ``special_tokens_map_file`` as an absolute path on the author's machine (ComfyUI's
    own hydit_clip_tokenizer has one): such a folder must load, from its own files."""
    model = copy_model(tiny_diffusers, tmp_path)
    cfg_path = model / "tokenizer" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "special_tokens_map_file": "/home/someone/.cache/huggingface/hub/"
                                    "models--hfl--chinese-roberta-wwm-ext/snapshots/0/special_tokens_map.json"}))
    encoder = hy.load_text_encoder(model, device="cpu")
    assert encoder.bert_tokenizer.get_vocab() == hy.load_text_encoder(tiny_diffusers, device="cpu").bert_tokenizer.get_vocab()


def test_comfyuis_bundled_bert_tokenizer_loads():
    """The vocabulary the pack uses for all-in-one files inside ComfyUI (they carry none)."""
    from hunyuan_core.formats.text_encoder_files import load_bert_tokenizer

    require_comfyui()
    from nodes import host

    folder = host.comfy_bert_vocab()
    assert folder is not None and Path(folder).name == "hydit_clip_tokenizer"
    tokenizer = load_bert_tokenizer(folder)
    assert len(tokenizer.get_vocab()) == 47020  # hfl/chinese-roberta-wwm-ext's vocabulary
    assert tokenizer.tokenize("一只猫")[:3] == ["一", "只", "猫"]


def test_shard_index_that_is_not_an_object_or_has_no_weight_map(tiny_diffusers, tmp_path):
    model = copy_model(tiny_diffusers, tmp_path)
    index_path = model / "text_encoder_2" / "model.safetensors.index.json"
    for content, reason in (("[1]", r"must hold a JSON object; found \[1\]"), ('{"weight_map": [1]}', "expected \"weight_map\""),
                            ('{"weight_map": {"encoder.final_layer_norm.weight": 5}}', "names the file 5")):
        index_path.write_text(content)
        with pytest.raises(ModelFileError, match=reason):
            hy.load_text_encoder(model, device="cpu")


# -------------------------------------------------------------------------------------- 4. never the network
@pytest.fixture()
def no_network(monkeypatch):
    """An online user (hub flags off) on a machine where any connection attempt is recorded and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during a local load")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return attempts


BROKEN_CONFIGS = {
    "vae/config.json": '"stabilityai/sdxl-vae"',
    "text_encoder/config.json": '["hfl/chinese-roberta-wwm-ext-large"]',
    "text_encoder_2/config.json": '"google/mt5-xl"',
    "tokenizer/tokenizer_config.json": '"bert-base-chinese"',
    "tokenizer_2/tokenizer_config.json": "7",
}


@pytest.mark.parametrize("relpath", sorted(BROKEN_CONFIGS))
def test_config_that_is_not_an_object_never_reaches_the_hub(tiny_diffusers, tmp_path, no_network, relpath):
    model = copy_model(tiny_diffusers, tmp_path)
    (model / relpath).write_text(BROKEN_CONFIGS[relpath])
    load = hy.load_vae if relpath.startswith("vae") else hy.load_text_encoder
    with pytest.raises(ModelFileError, match=rf"'{model / relpath}' must hold a JSON object"):
        load(model, device="cpu")
    with pytest.raises(ModelFileError, match="must hold a JSON object"):
        hy.load_pipeline(model, device="cpu")
    assert no_network == []


def test_local_layouts_load_without_any_connection_attempt(tiny_official, tiny_diffusers, tiny_comfy, tiny_bert_vocab,
                                                           no_network):
    hy.load_pipeline(tiny_official, device="cpu")
    hy.load_pipeline(tiny_diffusers, device="cpu")
    hy.load_pipeline(tiny_comfy, device="cpu", bert_vocab=tiny_bert_vocab)
    assert no_network == []
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ  # restored


def test_offline_switches_every_flag_and_restores_them_when_the_last_user_leaves(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with files_module.offline():
        with files_module.offline():
            pass
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0" and "HF_HUB_OFFLINE" not in os.environ


# ---------------------------------------------------------------------------------- 5. the ComfyUI loaders
@pytest.fixture()
def wrong_checkpoints(tmp_path, monkeypatch, dit_sd):
    """A models/ folder whose checkpoints/ holds files of the wrong kind, and truncated ones."""
    require_comfyui()
    from nodes import host

    tiny = tiny_models().models
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(tiny / VAE_FILE, checkpoints / "sdxl_vae.safetensors")
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.ones(8, 4, 3, 3)}, checkpoints / "sd15.safetensors")
    vae = (tiny / VAE_FILE).read_bytes()
    (checkpoints / "cut_vae.safetensors").write_bytes(vae[: len(vae) // 2])
    (checkpoints / "cut_header.safetensors").write_bytes(vae[:40])
    dit = (tiny / DIT_ONLY).read_bytes()
    (checkpoints / "cut_dit.pt").write_bytes(dit[: len(dit) // 2])
    save_file(dit_sd, checkpoints / "dit_only.safetensors")
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(tmp_path / "models"))
    return checkpoints


WRONG_FILES = {
    "sdxl_vae.safetensors": r"is a VAE \(SD/SDXL autoencoder\);",
    "sd15.safetensors": r"is a Stable Diffusion / SDXL UNet;",
    "cut_vae.safetensors": r"is truncated: its header describes",
    "cut_header.safetensors": r"is truncated: its header alone needs",
    "cut_dit.pt": r"truncated or corrupt",
    "dit_only.safetensors": r"is a DiT-only file;",
}


@pytest.mark.parametrize("name", sorted(WRONG_FILES))
def test_checkpoint_and_text_encoder_loaders_name_what_a_wrong_file_is(wrong_checkpoints, name):
    from nodes.loaders import HunyuanDiTCheckpointLoader, HunyuanDiTTextEncoderLoader

    choice = f"checkpoints/{name}"
    with pytest.raises(ModelFileError, match=WRONG_FILES[name]) as err:
        run_node(HunyuanDiTCheckpointLoader, ckpt_name=choice, variant="auto", dtype="auto",
                  text_encoder_policy="offload after encoding")
    assert str(wrong_checkpoints / name) in str(err.value)
    with pytest.raises(ModelFileError, match=WRONG_FILES[name]):
        run_node(HunyuanDiTTextEncoderLoader, source=choice, dtype="auto", policy="keep on GPU",
                  bert_file="none", mt5_file="none")
    if name != "dit_only.safetensors":
        assert "DiT-only" not in str(err.value)
