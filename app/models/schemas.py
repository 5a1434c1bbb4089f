from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from app.schemas import StrictModel, example

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
TABULAR_METHODS = ("retrain", "sisa", "finetune", "neggrad_plus", "scrub", "salun", "certified_newton")
# gradient_difference and npo are for language models (causal_lm, hf_causal_lm), gradient_difference
# and salun also for image models (image_diffusion: their diffusion variants).
METHODS = (*TABULAR_METHODS, "gradient_difference", "npo")


class SisaSpec(StrictModel):
    shards: int = Field(ge=1, le=64, description="S: subjects are split into S shards by subject key.")
    slices: int = Field(ge=1, le=32, description="R: each shard is trained in R slices with a checkpoint after each.")
    slice_key: Literal["subject", "record"] = Field(
        default="subject",
        description="How a shard is cut into slices: by subject key (a subject's records share one slice, so erasing "
                    "it retrains its shard from that slice on) or by record id.")


class ModelCreate(StrictModel):
    model_config = example({
        "name": "digits-lr", "family": "logistic_regression", "dataset_id": "5f0c8a52-3a52-4c1e-9d3e-2b7f1c0a9e11",
    })

    name: str = Field(pattern=NAME_PATTERN)
    family: str = Field(min_length=1, max_length=64)
    dataset_id: uuid.UUID = Field(description="A dataset id (its current version is used) or a dataset version id.")
    params: dict[str, Any] | None = None
    sisa: SisaSpec | None = None
    holdout_fraction: float = Field(default=0.1, ge=0, le=0.5)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    unlearning_method: str | None = Field(default=None, description=f"One of {', '.join(METHODS)}; default by policy.")


class ModelVersionOut(BaseModel):
    version: int
    created_at: datetime
    sha256: str
    metrics: dict[str, Any]
    dataset_version_id: uuid.UUID
    origin: dict[str, Any]
    destroyed: bool
    current: bool


class ModelOut(BaseModel):
    id: uuid.UUID
    client: str
    name: str
    family: str
    dataset_id: uuid.UUID
    params: dict[str, Any]
    sisa: dict[str, Any] | None
    holdout_fraction: float
    seed: int
    unlearning_method: str | None
    current: int | None
    created_at: datetime
    versions: list[ModelVersionOut]


class ModelPage(BaseModel):
    items: list[ModelOut]


class RehearsalOut(BaseModel):
    """The model's latest unlearning rehearsal: counts and figures, never the subjects."""

    id: uuid.UUID
    model_id: uuid.UUID
    model_version: int
    dataset_version_id: uuid.UUID
    created_at: datetime
    subjects: int = Field(description="Random trained subjects each draw erased in memory.")
    forget_records: int = Field(description="Trained records those subjects held, over all draws.")
    retrain_cpu_s: float = Field(description="Mean CPU seconds of one real retrain without a draw's subjects (0 where "
                                 "too few draws were testable for any candidate to pass, and nothing was retrained).")
    draws: int = Field(description="Independent draws of subjects rehearsed (1 for rehearsals before draws).")
    results: list[dict[str, Any]] = Field(
        description="One entry per candidate: method, settings (overrides of its defaults), verdict, reasons, "
        "gaps to the retrains (mean |gap| over the draws: forget_accuracy, holdout_accuracy, mia_auc), cost "
        "(fraction of a retrain's CPU time, mean over the draws it ran; null where it ran on none), cpu_s, pass_rate "
        "(share of draws passed), draws (each draw's verdict, passed, signed gaps; \"skipped\" where the candidate "
        "had already failed too many draws to pass, or too few draws were testable for any candidate to pass; "
        "\"untestable\" where the draw's no-op control passes the model before unlearning, so no result could pass "
        "there), passed.")
    chosen: dict[str, Any] | None = Field(
        description="The passing candidate with the highest pass rate, the cheapest among equals {method, settings}, "
        "or null.")


# Networks compute in float32: a larger feature value would be infinite there.
FLOAT32_MAX = 3.4028234663852886e38
Feature = Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


class PredictBody(StrictModel):
    model_config = example({"rows": [[0.0, 0.5, 1.0, 0.25]]})

    rows: list[list[Feature]] = Field(min_length=1)


class PredictOut(BaseModel):
    model: str
    version: int
    probabilities: list[list[float]]


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" JSON escape
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


# Smallest non-zero sampling temperature: logits divided by much less overflow float32 (1e-300
# and 5e-324 made the worker compute inf and NaN), and sampling that cold is greedy anyway.
MIN_TEMPERATURE = 0.01


class GenerateBody(StrictModel):
    model_config = example({"prompt": "Dear support team,", "max_new_tokens": 40, "temperature": 0.0, "seed": 0})

    prompt: Text = Field(description="Text to continue; at most OBLIVIATE_MAX_PROMPT_BYTES UTF-8 bytes (413).")
    max_new_tokens: int = Field(
        default=64, ge=1, le=2**31 - 1, description="Tokens to generate at most (bytes for causal_lm, the tokenizer's "
        "tokens for hf_causal_lm); at most OBLIVIATE_MAX_NEW_TOKENS (422).",
    )
    temperature: float = Field(
        default=0.0, ge=0, le=100, allow_inf_nan=False,
        description=f"0 decodes greedily; otherwise at least {MIN_TEMPERATURE} (422 between): dividing the logits by "
                    "less overflows them to infinity.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the sampling; same seed, same text.")

    @field_validator("temperature")
    @classmethod
    def _greedy_or_warm_enough(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"temperature is 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value


class GenerateOut(BaseModel):
    model: str
    version: int
    text: str = Field(description="The continuation only, without the prompt; stops at end-of-text.")


class ScoreBody(StrictModel):
    model_config = example({"texts": ["Dear support team, my order is late."]})

    texts: list[Text] = Field(min_length=1, description="At most OBLIVIATE_MAX_PREDICT_ROWS texts (413).")


class TextScore(BaseModel):
    log_likelihood: float | None = Field(
        description="Sum of the natural-log probabilities of every byte given its prefix, the first given "
        "begin-of-text; texts longer than the context are scored with a sliding window.",
    )
    tokens: int = Field(description="Tokens scored: the text's UTF-8 bytes (causal_lm), or its tokens under the "
                        "model's tokenizer (hf_causal_lm).")


class ScoreOut(BaseModel):
    model: str
    version: int
    scores: list[TextScore]


class SampleBody(StrictModel):
    model_config = example({"n": 8, "seed": 0, "steps": 50, "label": None})

    n: int = Field(default=8, ge=1, le=2**31 - 1, description="Images to draw; at most OBLIVIATE_MAX_SAMPLES (422).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the sampling; same seed, same images.")
    steps: int | None = Field(
        default=None, ge=1, le=2**31 - 1,
        description="Denoising steps, at most the model's num_train_timesteps (422); default its sample_steps.",
    )
    label: int | None = Field(
        default=None, ge=0, le=2**31 - 1,
        description="A conditional model's class: the index in its dataset's classes. None draws labels under the seed.",
    )


class SampleOut(BaseModel):
    model: str
    version: int
    images: list[str] = Field(description="Base64 PNG images of the model's size and channels.")


class ScoreImagesBody(StrictModel):
    model_config = example({"images": ["iVBORw0KGgo..."], "labels": None})

    images: list[Annotated[str, Field(max_length=16 * 1024 * 1024)]] = Field(
        min_length=1, description="Base64 PNG or JPEG images of the model's size; at most OBLIVIATE_MAX_SAMPLES (422).",
    )
    labels: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        default=None, description="A conditional model's class of each image (index in its dataset's classes); required there.",
    )


class ScoreImagesOut(BaseModel):
    model: str
    version: int
    losses: list[float | None] = Field(
        description="Each image's denoising loss: the mean squared error of the predicted noise at fixed timesteps. "
        "Low is what the model fits well, the membership signal of a diffusion model.",
    )


class ImportMetadata(StrictModel):
    kind: Literal["model"] = Field(default="model", description="`model`: trained weights; `base`: see BaseImportMetadata.")
    name: str = Field(pattern=NAME_PATTERN)
    family: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] | None = None
    dataset_version_id: uuid.UUID
    record_ids: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] | None = Field(
        default=None, min_length=1,
        description="The records of that dataset version the weights were trained on; for more than a few "
        "thousand, send them as the record_ids file part instead.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    unlearning_method: str | None = None


class BaseImportMetadata(StrictModel):
    """An imported Hugging Face base: the `archive` file part holds its save_pretrained directory."""

    kind: Literal["base"]
    name: str = Field(pattern=NAME_PATTERN, description="Unique per client; hf_causal_lm models name it in params.base.")


class BaseFile(BaseModel):
    sha256: str
    size: int


class BaseOut(BaseModel):
    id: uuid.UUID
    client: str
    name: str
    architecture: str = Field(description="The configuration's model_type: gpt2, llama or qwen2.")
    parameters: int = Field(description="Parameters, counted from the safetensors headers.")
    archive_sha256: str = Field(description="sha256 of the stored, normalised tar of the files.")
    files: dict[str, BaseFile] = Field(description="Each file of the base by name, with its sha256 and size.")
    created_at: datetime


class BasePage(BaseModel):
    items: list[BaseOut]
