"""StableDiffusionFM on a tiny randomly initialised Stable Diffusion pipeline saved to disk (offline, a few seconds)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from paper_repro.fm.ddpm import FMCheckpointError
from paper_repro.fm.text2image import StableDiffusionFM

# diffusers/transformers (and so huggingface_hub) are imported lazily, after this; nothing is fetched anyway: the
# pipeline is built from configs and loaded with local_files_only=True.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MAX_LEN = 32


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable unicode character map (used by CLIP's BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _tokenizer(folder):
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    # transformers 5.x: CLIPTokenizer(vocab=dict, merges=list); vocab_file=/merges_file= are silently ignored (a
    # 3-token vocabulary results), so read the files through from_pretrained and check the ids.
    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=MAX_LEN)
    ids = {t: i for i, t in enumerate(tokens)}
    assert tok("a cat").input_ids == [
        ids["<|startoftext|>"],
        ids["a</w>"],
        ids["c"],
        ids["a"],
        ids["t</w>"],
        ids["<|endoftext|>"],
    ]
    return tok, len(tokens)


def _tiny_pipeline(tmp_path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok, vocab = _tokenizer(tmp_path / "tok_src")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,),
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        sample_size=8,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=MAX_LEN,
            projection_dim=16,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        )
    )
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = tmp_path / "sd"
    pipe.save_pretrained(out)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and avoids 10-100× slow-downs when other jobs share the 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return _tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


def test_generate_shape_labels_and_determinism(sd_folder):
    fm = StableDiffusionFM.load(sd_folder, classes=("cat", "dog"), resolution=16, channels=1)
    assert fm.shape == (1, 16, 16)
    assert fm.prompts() == ["a photo of a cat", "a photo of a dog"]
    a = fm.generate(2, generator=torch.Generator().manual_seed(0), num_inference_steps=2, progress=False)
    assert a.x.shape == (4, 1, 16, 16) and a.x.dtype == np.uint8
    assert a.y.tolist() == [0, 0, 1, 1]
    assert a.classes == ("cat", "dog")
    b = fm.generate(2, generator=torch.Generator().manual_seed(0), num_inference_steps=2, progress=False)
    c = fm.generate(2, generator=torch.Generator().manual_seed(1), num_inference_steps=2, progress=False)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    d = fm.digest()
    assert len(d) == 16 and d == fm.digest()


def test_prompt_conditions_images(sd_folder):
    fm = StableDiffusionFM.load(sd_folder, classes=("cat",), resolution=16, channels=1)
    assert fm.pipe.tokenizer("cat").input_ids[1:-1] != fm.pipe.tokenizer("dog").input_ids[1:-1]  # saved vocab kept
    cat = fm.generate(1, generator=torch.Generator().manual_seed(0), num_inference_steps=2, progress=False)
    fm.classes = ("dog",)
    dog = fm.generate(1, generator=torch.Generator().manual_seed(0), num_inference_steps=2, progress=False)
    assert not np.array_equal(cat.x, dog.x)  # same latents, different prompt


def test_rgb_batches_split(sd_folder):
    fm = StableDiffusionFM.load(sd_folder, classes=("cat", "dog"), resolution=4, channels=3)
    s = fm.generate(3, generator=torch.Generator().manual_seed(0), num_inference_steps=1, batch_size=2, progress=False)
    assert s.x.shape == (6, 3, 4, 4) and s.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_missing_folder_names_folder(tmp_path):
    missing = tmp_path / "no_such_sd"
    with pytest.raises(FMCheckpointError, match="no_such_sd") as e:
        StableDiffusionFM.load(missing, classes=("cat",))
    assert "save_pretrained" in str(e.value) and "fm.checkpoint" in str(e.value)


def test_unreadable_folder(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(FMCheckpointError, match="unreadable"):
        StableDiffusionFM.load(tmp_path, classes=("cat",))
