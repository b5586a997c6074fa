"""Image reward models (annotators) from local weights: CLIP score, PickScore, HPSv2 and the LAION
aesthetic predictor, each behind genpref's reward interface `score(images, prompts) -> Tensor[B]`
(on the CPU, higher = better). `build_reward(spec, cfg, device)` is what genpref/build.py calls for
the reward names "clip", "pickscore", "hpsv2" and "aesthetic".

Scales (what one number means; an ensemble with reward.normalize=zscore makes them comparable):

| name      | score                                  | weights (`reward.models[i].path`)                          |
|-----------|----------------------------------------|------------------------------------------------------------|
| clip      | 100·cos(image, text)                   | a transformers CLIP directory (model + processor files)    |
| pickscore | logit_scale·cos(image, text) (≈100·cos) | yuvalkirstain/PickScore_v1 (+ the CLIP-H processor files)  |
| hpsv2     | 100·cos(image, text) of the HPS model  | HPS_v2_compressed.pt / HPS_v2.1_compressed.pt (open_clip)   |
| aesthetic | MLP head on the L2-normalised CLIP ViT-L/14 image embedding (≈ 1–10) | head .pth/.safetensors + `clip/` dir |

CLIP score follows torchmetrics' 100·cos without its clamp at 0 (real image–text pairs are positive, so
the two agree; the clamp would only hide an ordering). PickScore multiplies by the model's learned
logit scale, as its model card does. HPSv2's own `hpsv2.score` returns the plain cosine (≈ 0.27); we
report 100·cos as Diffusion-DRO's evaluation does (misc/scores.py), so divide by 100 to compare with
the HPSv2 paper's tables.

Everything is read from local paths (nothing is downloaded); a missing or unusable path is one
UserError naming `reward.models[i].path`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genpref.errors import UserError

CHUNK = 32  # images per forward pass: bounds memory when a caller scores K × B samples at once
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # released repos | transformers 5 saves
HPS_ARCH = "ViT-H-14"  # the open_clip architecture HPSv2 fine-tunes
CLIP_SUBDIR = "clip"  # aesthetic: the CLIP ViT-L/14 directory beside the head weights


# ---------------------------------------------------------------------------------------------- math


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of [B, D] embeddings -> [B]."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return (a * b).sum(-1)


def projected(output: Any) -> Tensor:
    """CLIPModel.get_*_features: a tensor in transformers 4, an output whose pooler_output holds the
    projected embedding in transformers 5."""
    return output if isinstance(output, Tensor) else output.pooler_output


def chunked(fn, images: Sequence, prompts: Sequence[str]) -> Tensor:
    """fn over CHUNK-sized slices, concatenated as float32 on the CPU."""
    if len(images) != len(prompts):
        raise ValueError(f"score: {len(images)} images but {len(prompts)} prompts")
    parts = [fn(list(images[i:i + CHUNK]), list(prompts[i:i + CHUNK])) for i in range(0, len(images), CHUNK)]
    return torch.cat(parts).float().cpu() if parts else torch.zeros(0)


# ---------------------------------------------------------------------------------------------- paths


def path_key(spec, cfg) -> str:
    """How the user names this spec's path: reward.models[i].path when it is one of the config's."""
    models = getattr(getattr(cfg, "reward", None), "models", None) or []
    i = next((i for i, s in enumerate(models) if s is spec), None)
    return f"reward.models[{i}].path" if i is not None else f"the path of reward {spec.name!r}"


def local_path(spec, cfg, expects: str) -> Path:
    """spec.path as an existing local path; UserError naming the key otherwise."""
    key = path_key(spec, cfg)
    if not spec.path:
        raise UserError(f"{key}: reward {spec.name!r} needs local weights ({expects}); nothing is downloaded")
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise UserError(f"{key}: {path} does not exist (reward {spec.name!r} expects {expects})")
    return path


def has_processor(directory: Path) -> bool:
    return any((directory / name).is_file() for name in PROCESSOR_FILES)


def load_clip(model_dir: Path, processor_dir: Path, key: str, what: str) -> tuple[nn.Module, Any]:
    """A transformers CLIPModel and CLIPProcessor from local directories, in eval mode."""
    from transformers import CLIPModel, CLIPProcessor

    from image.models import quiet

    if not has_processor(processor_dir):
        raise UserError(f"{key}: no {PROCESSOR_FILES[0]} in {processor_dir}: {what} needs the CLIP processor "
                        "files (preprocessor_config.json, tokenizer) next to the model")
    try:
        with quiet():
            model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True)
            processor = CLIPProcessor.from_pretrained(str(processor_dir), local_files_only=True)
    except Exception as err:  # transformers/safetensors raise many types for a wrong or corrupt directory
        raise UserError(f"{key}: could not load {what} from {model_dir}: {type(err).__name__}: {err}") from None
    return model.eval().requires_grad_(False), processor


def read_state_dict(file: Path, key: str) -> dict[str, Tensor]:
    """Tensors of a .safetensors or a torch checkpoint (weights only); a {'state_dict': ...} wrapper
    and DDP's 'module.' prefixes are removed."""
    from genpref.safe_load import load_weights

    try:
        state = load_weights(file, "scorer weights")
    except UserError as err:
        raise UserError(f"{key}: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{key}: {file} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


# ---------------------------------------------------------------------------------------------- CLIP family


class ClipScorer:
    """scale · cos(image embedding, text embedding) of a transformers CLIP model.

    scale: 100 (CLIP score) or None for the model's own exp(logit_scale) (PickScore)."""

    def __init__(self, model: nn.Module, processor: Any, device: torch.device, scale: float | None = 100.0):
        self.model, self.processor, self.device = model.to(device), processor, torch.device(device)
        self.scale = scale

    def logit(self) -> Tensor:
        return self.model.logit_scale.exp().float() if self.scale is None else torch.tensor(self.scale)

    @torch.no_grad()
    def _score(self, images: list, prompts: list[str]) -> Tensor:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        text = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        image_emb = projected(self.model.get_image_features(pixel_values=pixels.to(self.device, dtype)))
        text_emb = projected(self.model.get_text_features(input_ids=text["input_ids"].to(self.device),
                                                          attention_mask=text["attention_mask"].to(self.device)))
        return self.logit().to(self.device) * cosine(image_emb.float(), text_emb.float())

    def score(self, samples: Sequence, prompts: Sequence[str]) -> Tensor:
        return chunked(self._score, samples, prompts)


def build_clip(spec, cfg, device) -> ClipScorer:
    path = local_path(spec, cfg, "a CLIP directory such as openai/clip-vit-large-patch14 downloaded with its processor")
    model, processor = load_clip(path, path, path_key(spec, cfg), "the CLIP score")
    return ClipScorer(model, processor, device, scale=100.0)


def build_pickscore(spec, cfg, device) -> ClipScorer:
    """PickScore_v1 is CLIP-H fine-tuned on Pick-a-Pic; its repository has no processor files, which are
    CLIP-H's (laion/CLIP-ViT-H-14-laion2B-s32B-b79K): put them in the directory or in its processor/."""
    path = local_path(spec, cfg, "the yuvalkirstain/PickScore_v1 directory with the CLIP-H processor files")
    processor_dir = path / "processor" if has_processor(path / "processor") else path
    model, processor = load_clip(path, processor_dir, path_key(spec, cfg), "PickScore")
    return ClipScorer(model, processor, device, scale=None)


# ---------------------------------------------------------------------------------------------- HPSv2


def import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise UserError('reward "hpsv2" needs open_clip, an optional extra: pip install -e ".[hpsv2]"') from None
    return open_clip


class HpsV2Scorer:
    """HPSv2: 100·cos of the fine-tuned open_clip ViT-H-14's normalised image and text features
    (the HPSv2 repository's evaluation preprocessing: resize 224 bicubic, centre crop, CLIP mean/std)."""

    def __init__(self, model: nn.Module, preprocess: Any, tokenizer: Any, device: torch.device):
        self.model, self.preprocess, self.tokenizer = model.to(device), preprocess, tokenizer
        self.device = torch.device(device)

    @torch.no_grad()
    def _score(self, images: list, prompts: list[str]) -> Tensor:
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        image_emb = self.model.encode_image(pixels, normalize=True)
        text_emb = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True)
        return 100.0 * (image_emb.float() * text_emb.float()).sum(-1)

    def score(self, samples: Sequence, prompts: Sequence[str]) -> Tensor:
        return chunked(self._score, samples, prompts)


def build_hpsv2(spec, cfg, device, arch: str | None = None) -> HpsV2Scorer:
    key = path_key(spec, cfg)
    file = local_path(spec, cfg, "the HPSv2 checkpoint file HPS_v2_compressed.pt or HPS_v2.1_compressed.pt")
    if not file.is_file():
        raise UserError(f"{key}: {file} is a directory; give the checkpoint file (HPS_v2_compressed.pt)")
    open_clip = import_open_clip()
    state = read_state_dict(file, key)
    model, _, preprocess = open_clip.create_model_and_transforms(arch or HPS_ARCH, pretrained=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise UserError(f"{key}: {file} does not fit open_clip {arch or HPS_ARCH}: {detail}") from None
    return HpsV2Scorer(model.eval().requires_grad_(False), preprocess, open_clip.get_tokenizer(arch or HPS_ARCH), device)


# ---------------------------------------------------------------------------------------------- aesthetic


class AestheticMLP(nn.Module):
    """The improved aesthetic predictor's head (sac+logos+ava1-l14-linearMSE.pth): linear layers with
    dropout and no nonlinearity, on a 768-d CLIP ViT-L/14 embedding. Module names follow the released
    state dict (layers.0 ... layers.7)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, embedding: Tensor) -> Tensor:
        return self.layers(embedding)


def aesthetic_head(state: dict[str, Tensor], key: str, file: Path) -> nn.Module:
    """The MLP head (improved-aesthetic-predictor, keys layers.*) or the original linear one
    (LAION-AI/aesthetic-predictor sa_0_4_vit_l_14_linear.pth, keys weight/bias), sized by the weights."""
    if "layers.0.weight" in state:
        head = AestheticMLP(state["layers.0.weight"].shape[1])
    elif set(state) == {"weight", "bias"}:
        head = nn.Linear(state["weight"].shape[1], 1)
    else:
        raise UserError(f"{key}: {file} is not an aesthetic head (expected keys layers.0.weight ... or weight/bias)")
    try:
        head.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{key}: {file} does not fit the aesthetic head: {str(err).splitlines()[-1].strip()}") from None
    return head.eval().requires_grad_(False)


class AestheticScorer:
    """head(e / |e|), e = CLIP ViT-L/14's projected image embedding; the prompt is not used."""

    def __init__(self, clip: nn.Module, processor: Any, head: nn.Module, device: torch.device):
        self.clip, self.processor, self.head = clip.to(device), processor, head.to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def _score(self, images: list, prompts: list[str]) -> Tensor:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        dtype = next(self.clip.parameters()).dtype
        e = projected(self.clip.get_image_features(pixel_values=pixels.to(self.device, dtype))).float()
        return self.head(e / e.norm(dim=-1, keepdim=True)).squeeze(-1)

    def score(self, samples: Sequence, prompts: Sequence[str]) -> Tensor:
        return chunked(self._score, samples, prompts)


def aesthetic_files(path: Path, key: str) -> tuple[Path, Path]:
    """(head weights, CLIP dir): `path` is the head file with clip/ beside it, or a directory holding one
    head file (.pth / .safetensors) and clip/."""
    folder = path.parent if path.is_file() else path
    heads = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".pth", ".safetensors"))
    if len(heads) != 1:
        found = ", ".join(p.name for p in heads) or "none"
        raise UserError(f"{key}: expected one head weights file (.pth or .safetensors) in {path}, found {found}")
    clip_dir = folder / CLIP_SUBDIR
    if not clip_dir.is_dir():
        raise UserError(f"{key}: no {CLIP_SUBDIR}/ directory in {folder}: put a local copy of "
                        "openai/clip-vit-large-patch14 (model + processor files) there")
    return heads[0], clip_dir


def build_aesthetic(spec, cfg, device) -> AestheticScorer:
    key = path_key(spec, cfg)
    path = local_path(spec, cfg, "the aesthetic head weights and a clip/ directory (CLIP ViT-L/14)")
    head_file, clip_dir = aesthetic_files(path, key)
    head = aesthetic_head(read_state_dict(head_file, key), key, head_file)
    clip, processor = load_clip(clip_dir, clip_dir, key, "the aesthetic predictor's CLIP")
    dim = clip.config.projection_dim
    first = head.layers[0] if isinstance(head, AestheticMLP) else head
    if first.in_features != dim:
        raise UserError(f"{key}: head {head_file.name} takes {first.in_features}-d embeddings but "
                        f"{clip_dir} gives {dim}-d (the heads are for CLIP ViT-L/14)")
    return AestheticScorer(clip, processor, head, device)


# ---------------------------------------------------------------------------------------------- build

# reward.models[].name -> constructor(spec, cfg, device)
SCORERS = {"clip": build_clip, "pickscore": build_pickscore, "hpsv2": build_hpsv2, "aesthetic": build_aesthetic}


def build_reward(spec, cfg, device):
    if spec.name not in SCORERS:
        raise UserError(f"reward.models: {spec.name!r} is not an image scorer here; valid: {', '.join(SCORERS)}")
    return SCORERS[spec.name](spec, cfg, torch.device(device))
