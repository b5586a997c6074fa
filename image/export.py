"""Export a finished run's weights for other tools: diffusers LoRA (`pipe.load_lora_weights`), kohya LoRA
(AUTOMATIC1111, ComfyUI, SD.Next) or, for full fine-tunes, the diffusers pipeline directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import Tensor

from genpref.errors import UserError

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
FORMATS = ("diffusers", "kohya")


def final_dir(run_dir: str | Path) -> Path:
    final = Path(run_dir) / "final"
    if not final.is_dir():
        raise UserError(f"{run_dir}: no final/ directory (the run has not finished; nothing to export)")
    return final


def read_lora(file: str | Path) -> tuple[dict[str, Tensor], dict]:
    """A diffusers-format LoRA file -> (state dict with 'unet.' keys, its peft LoraConfig as a dict)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(file), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "{}"))
    config = {k.removeprefix("unet."): v for k, v in meta.items() if k.startswith("unet.")}
    return load_file(str(file)), config


def to_kohya(state: dict[str, Tensor], alpha: float | None) -> dict[str, Tensor]:
    """diffusers LoRA keys ('unet.…to_q.lora.down.weight') -> kohya ('lora_unet_…_to_q.lora_down.weight' +
    '.alpha'). Kohya scales by alpha/rank like peft, so each module's alpha is the run's model.lora.alpha
    (diffusers' converter writes alpha = rank, which would change the strength when alpha != rank)."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya, convert_unet_state_dict_to_peft

    unet = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    if not unet:
        raise UserError("the LoRA file has no UNet weights (keys starting with 'unet.')")
    peft = {f"unet.{k}": v for k, v in convert_unet_state_dict_to_peft(unet).items()}
    kohya = convert_state_dict_to_kohya(peft)
    if alpha is not None:
        for key in kohya:
            if key.endswith(".alpha"):
                kohya[key] = torch.tensor(float(alpha))
    return kohya


def export(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Write the run's final weights to `out` in `fmt`; returns the written path."""
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r}; valid: {', '.join(FORMATS)}")
    final, out = final_dir(run_dir), Path(out)
    lora = final / LORA_WEIGHTS
    if not lora.is_file():
        if fmt == "kohya":
            raise UserError(f"{final} is a full fine-tune (a diffusers pipeline), not a LoRA: kohya export needs "
                            "a LoRA run (model.lora set); use --format diffusers")
        if out.exists():
            raise UserError(f"{out} already exists; choose a new directory for the exported pipeline")
        shutil.copytree(final, out)
        return out
    if out.suffix != ".safetensors":
        out = out / (LORA_WEIGHTS if fmt == "diffusers" else "lora_kohya.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers":
        shutil.copyfile(lora, out)
        return out
    state, config = read_lora(lora)
    kohya = to_kohya(state, config.get("lora_alpha"))
    meta = {"ss_network_module": "networks.lora"}
    if "r" in config:
        meta.update(ss_network_dim=str(config["r"]), ss_network_alpha=str(config.get("lora_alpha", config["r"])))
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(out), metadata=meta)
    return out
