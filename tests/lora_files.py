"""Tiny LoRA files in every format users have, written from the documented key names
(reference/wave2/lora.md); each writer also returns the changes it wrote, for independent references."""

import json

import torch
from safetensors.torch import save_file

RANK = 4
PEFT_TARGETS = ("Wqkv", "out_proj", "q_proj", "kv_proj")  # the official trainer's --target-modules


def linears(model, keep=lambda name: True):
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and keep(name)}


def low_rank(module, seed, rank=RANK, rows=None):
    """(A [rank, in], B [out, rank]) with changes about as large as the weights."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(rank, module.in_features, generator=gen) * 0.2
    b = torch.randn(rows or module.out_features, rank, generator=gen) * 0.2
    return a, b


def write_peft(folder, model, seed=0, alpha=8, targets=PEFT_TARGETS, ext="safetensors", only=""):
    """The official trainer's ``save_pretrained`` folder; PEFT targets every module whose name ends in a target
    (``only``: just the modules whose names start with it)."""
    folder.mkdir()
    sd, changes = {}, []
    keep = lambda n: n.rsplit(".", 1)[-1] in targets and n.startswith(only)  # noqa: E731
    for i, (name, m) in enumerate(linears(model, keep).items()):
        a, b = low_rank(m, seed + i)
        sd[f"base_model.model.{name}.lora_A.weight"], sd[f"base_model.model.{name}.lora_B.weight"] = a, b
        changes.append((name, 0, a, b, alpha / RANK))
    if ext == "safetensors":
        save_file(sd, folder / "adapter_model.safetensors")
    else:
        torch.save(sd, folder / "adapter_model.bin")
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
              "use_dora": False, "use_rslora": False, "target_modules": list(targets)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder, changes


def write_peft_file(folder, model):
    """Only the weights file of a PEFT folder is named; its adapter_config.json beside it gives the scale."""
    folder, changes = write_peft(folder, model, alpha=2)
    return folder / "adapter_model.safetensors", changes


def write_kohya(path, model, seed=0, alpha=2.0, prefix="lora_unet_", sep="_", text_encoder=None):
    """kohya sd-scripts: every Linear in the blocks, ``lora_down``/``lora_up``/``alpha``; BERT as ``lora_te1_``."""
    sd, changes = {}, []
    for i, (name, m) in enumerate(linears(model, lambda n: n.startswith("blocks.")).items()):
        a, b = low_rank(m, seed + i)
        key = prefix + name.replace(".", sep)
        sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = a, b
        sd[f"{key}.alpha"] = torch.tensor(alpha)
        changes.append((name, 0, a, b, alpha / RANK))
    te_changes = []
    if text_encoder is not None:
        for i, (name, m) in enumerate(linears(text_encoder, lambda n: n.startswith("encoder.layer.")).items()):
            a, b = low_rank(m, seed + 1000 + i)
            key = "lora_te1_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = a, b
            te_changes.append((name, 0, a, b, 1.0))  # no alpha: scale 1
    if path.suffix == ".safetensors":
        save_file(sd, path)
    else:
        torch.save(sd, path)
    return path, changes, te_changes


def write_diffusers_split(path, model, seed=0):
    """diffusers names with split q/k/v (each its own rank and alpha) -> row blocks of Wqkv / kv_proj."""
    sd, changes = {}, []
    dim = model.config.hidden_size
    for i, block in enumerate(model.blocks):
        split = [("attn1.to_q", "attn1.Wqkv", 0, block.attn1.Wqkv), ("attn1.to_k", "attn1.Wqkv", 1, block.attn1.Wqkv),
                 ("attn1.to_v", "attn1.Wqkv", 2, block.attn1.Wqkv), ("attn2.to_k", "attn2.kv_proj", 0, block.attn2.kv_proj),
                 ("attn2.to_v", "attn2.kv_proj", 1, block.attn2.kv_proj), ("attn2.to_q", "attn2.q_proj", 0, block.attn2.q_proj),
                 ("attn1.to_out.0", "attn1.out_proj", 0, block.attn1.out_proj), ("ff.net.0.proj", "mlp.fc1", 0, block.mlp.fc1),
                 ("norm1.linear", "default_modulation.1", 0, block.default_modulation[1])]
        for j, (diffusers, official, index, m) in enumerate(split):
            rank = 2 + j % 3
            rows = dim if m.out_features in (2 * dim, 3 * dim) else None
            a, b = low_rank(m, seed + 100 * i + j, rank, rows)
            key = f"transformer.blocks.{i}.{diffusers}"
            sd[f"{key}.lora_A.weight"], sd[f"{key}.lora_B.weight"] = a, b
            sd[f"{key}.alpha"] = torch.tensor(float(j + 1))
            changes.append((f"blocks.{i}.{official}", index * dim, a, b, (j + 1) / rank))
    m = model.pooler.q_proj
    a, b = low_rank(m, seed + 99)
    sd["transformer.time_extra_emb.pooler.q_proj.lora_A.weight"] = a
    sd["transformer.time_extra_emb.pooler.q_proj.lora_B.weight"] = b
    changes.append(("pooler.q_proj", 0, a, b, 1.0))
    save_file(sd, path)
    return path, changes


def write_dotless(path, model, seed=0):
    """comfyui-hydit's converter: ``"lora_unet_" + "_".join(peft_key[17:].split("."))``."""
    folder, changes = write_peft(path.parent / "peft_for_dotless", model, seed, alpha=RANK)
    from safetensors.torch import load_file

    peft = load_file(folder / "adapter_model.safetensors")
    save_file({"lora_unet_" + "_".join(k[17:].split(".")): v for k, v in peft.items()}, path)
    return path, changes
