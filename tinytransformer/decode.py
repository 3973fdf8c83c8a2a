"""Generation: greedy decoding, sampling and beam search, with or without a KV cache.

Legend: B batch, S source length, t tokens fed to the decoder so far, V vocabulary
size, K beam size, L decoder layers, H heads.

A decoder makes one token per step, and the token at step t depends on every
token before it. Without a cache each step reruns the decoder on the whole
prefix, so T tokens cost 1 + 2 + ... + T positions, O(T^2). But under the causal
mask the keys and values of a past position never change, so a ``KVCache``
keeps them: a step runs only the newest token through the layers and attends to
the cached keys and values, O(T) positions in all. The encoder's memory never
changes either, so the cross-attention keys and values are computed once. Both
ways give the same logits (the tests hold them to 1e-10 in float64);
``use_cache=False`` is there to show it.

Special token ids are the model's own, from ``model.config``: the encoder-decoder's
output starts from ``bos_id``; a row ends when it emits ``eos_id`` and is filled
after it with ``pad_id``, or with ``eos_id`` again where the vocabulary has no
padding (``pad_id`` None, as GPT-2's). Decoding never emits the pad id, nor the bos
id unless it is also the eos id (GPT-2's one ``<|endoftext|>`` is both).

One step by hand, and what the cache holds after it (B 2, H 4, dk 16, S 5):

>>> from tinytransformer import Transformer, TransformerConfig
>>> model = Transformer(TransformerConfig(vocab_size=13), np.random.default_rng(0)).eval()
>>> pad, bos = model.config.pad_id, model.config.bos_id
>>> memory, src_keys = model.encode(np.array([[3, 4, 5, 6, 7], [8, 9, 10, pad, pad]]))
>>> cache = model.init_cache(memory, src_keys, capacity=8)
>>> model.decode_step(np.full((2, 1), bos), cache).shape      # logits of the token after BOS
(2, 1, 13)
>>> cache
KVCache(length=1, capacity=8, batch=2)
  self_attn[0]: AttentionCache(k=(2, 4, 1, 16), v=(2, 4, 1, 16), capacity=8, dtype=float32)
  self_attn[1]: AttentionCache(k=(2, 4, 1, 16), v=(2, 4, 1, 16), capacity=8, dtype=float32)
  cross_attn[0]: AttentionCache(k=(2, 4, 5, 16), v=(2, 4, 5, 16), capacity=5, dtype=float32)
  cross_attn[1]: AttentionCache(k=(2, 4, 5, 16), v=(2, 4, 5, 16), capacity=5, dtype=float32)

Every function here runs the model in eval mode (no dropout) and restores the
mode it found.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .nn.kv_cache import AttentionCache, KVCache
from .nn.masks import real_tokens
from .nn.module import Module
from .nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig
from .sampling import choose_next
from .threads import threads

__all__ = ["greedy_decode", "generate", "beam_search", "sequence_log_prob", "Decoded",
           "KVCache", "AttentionCache"]


@dataclass
class Decoded:
    """What ``greedy_decode`` and ``generate`` return when asked for more than the tokens.

    tokens     (B, n) int64       the generated tokens, each row ending at its eos, then filled
                                  (``fill_id``: the pad id, or eos where there is none)
    logits     (B, n, V) or None  the logits each token was chosen from
    attention  (L, B, H, n, S) or None   cross-attention weights over the source of the
                                  query that chose each token (``greedy_decode`` only)
    """
    tokens: np.ndarray
    logits: np.ndarray | None = None
    attention: np.ndarray | None = None


@contextmanager
def inference(model: Module):
    """Run the block with the model in eval mode, then restore the mode it was in; BLAS is
    held to one thread once for the whole block (``threads``), not at every step."""
    was_training = model.training
    model.eval()
    try:
        with threads():
            yield model
    finally:
        model.train(was_training)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, in float64: logits - logsumexp(logits)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def fill_id(config: TransformerConfig) -> int:
    """The id that fills a row after its eos: ``pad_id``, or ``eos_id`` when there is no padding.

    A vocabulary with neither (a character model of a text) never ends a row early, so
    nothing is filled; 0 only stands in the places that are about to be written.
    """
    if config.pad_id is not None:
        return config.pad_id
    return 0 if config.eos_id is None else config.eos_id


def never_emitted(model: Module, logits: np.ndarray) -> np.ndarray:
    """``logits`` (..., V) with the pad id and the bos id at -inf, bos only where it is not
    also eos: decoding never chooses them (the logits themselves, as returned, are the
    model's own)."""
    c = model.config
    out = logits.copy()
    out[..., [i for i in (c.pad_id, c.bos_id) if i is not None and i != c.eos_id]] = -np.inf
    return out


def start_id(model: Module, function: str) -> int:
    """The id an encoder-decoder's output starts from: ``config.bos_id``, which must exist."""
    if model.config.bos_id is None:
        raise ValueError(f"{function}: the decoder's input starts with bos_id, and the model's "
                         f"config has none (bos_id=None); give it one")
    return model.config.bos_id


def _next_logits(model: Module, use_cache: bool, capacity: int, batch: int,
                 memory: np.ndarray | None = None, src_keys: np.ndarray | None = None):
    """(next_logits, cache): ``next_logits(prefix)`` maps the tokens fed so far (B, t) to the
    logits (B, V) of the token after them.

    With a cache, only the tokens the cache has not seen are run through the model (the
    newest one, after the first call); without, the whole prefix is recomputed.
    """
    seq2seq = isinstance(model, Transformer)
    if not use_cache:
        if seq2seq:
            return (lambda prefix: model.decode(prefix, memory, src_keys)[:, -1]), None
        return (lambda prefix: model(prefix)[:, -1]), None
    cache = (model.init_cache(memory, src_keys, capacity) if seq2seq
             else model.init_cache(batch, capacity))
    return (lambda prefix: model.decode_step(prefix[:, cache.length:], cache)[:, -1]), cache


def _check_model(model, cls, function: str, hint: str) -> None:
    if not isinstance(model, cls):
        raise TypeError(f"{function}: expected a {cls.__name__}, got {type(model).__name__}; {hint}")


def _check_count(name: str, value, low: int, high: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name}: expected an integer in {low}..{high} ({why}), got {value!r}")


# ---- greedy decoding (encoder-decoder) -----------------------------------------------------


def greedy_decode(model: Transformer, src_ids: np.ndarray, max_len: int, use_cache: bool = True,
                  stop_at_eos: bool = True, return_logits: bool = False,
                  return_attention: bool = False):
    """Pick the most likely next token, one step at a time, from bos (``config.bos_id``).

    Returns (B, <= max_len) generated token ids without the bos: each row ends at
    its eos and is filled after it (``fill_id``: pad, or eos where the vocabulary has
    no padding; a finished row is fed that while the others go on). The encoder runs
    once. Decoding stops when every row has its eos (``config.eos_id``), or after
    ``max_len`` tokens; ``stop_at_eos=False`` always runs ``max_len`` steps.
    With ``return_logits`` or ``return_attention``, returns a ``Decoded`` instead.
    """
    _check_model(model, Transformer, "greedy_decode", "use generate() for a DecoderOnlyTransformer")
    _check_count("max_len", max_len, 1, model.config.max_len, "the model's max_len")
    bos, eos, fill = start_id(model, "greedy_decode"), model.config.eos_id, fill_id(model.config)
    step_logits, step_attention = [], []
    with inference(model):
        memory, src_keys = model.encode(src_ids)                 # (B, S, D)
        B = len(memory)
        tokens = np.full((B, 1 + max_len), fill, dtype=np.int64)  # bos, then what is generated
        tokens[:, 0] = bos
        finished = np.zeros(B, dtype=bool)
        next_logits, _ = _next_logits(model, use_cache, max_len, B, memory, src_keys)
        for t in range(max_len):
            logits = next_logits(tokens[:, :t + 1])              # (B, V)
            tokens[:, t + 1] = np.where(finished, fill, never_emitted(model, logits).argmax(axis=-1))
            finished |= tokens[:, t + 1] == eos
            if return_logits:
                step_logits.append(logits)
            if return_attention:   # the newest query's row of each layer's cross-attention
                step_attention.append([layer.cross_attn.attn[:, :, -1] for layer in model.decoder.layers])
            if stop_at_eos and finished.all():
                break
    tokens = tokens[:, 1:t + 2]
    if not (return_logits or return_attention):
        return tokens
    return Decoded(tokens,
                   np.stack(step_logits, axis=1) if return_logits else None,                 # (B, n, V)
                   np.array(step_attention).transpose(1, 2, 3, 0, 4) if return_attention else None)


# ---- generation (decoder-only) -------------------------------------------------------------


def _prompt_lengths(prompt_ids, pad_id: int | None) -> np.ndarray:
    """Lengths (B,) of right-padded prompts; a clear error for a pad inside or an empty prompt.
    Without a pad id (``pad_id`` None) every prompt is its whole row."""
    if not isinstance(prompt_ids, np.ndarray) or prompt_ids.ndim != 2 or prompt_ids.dtype.kind not in "iu":
        got = (f"{prompt_ids.dtype.name} array of shape {prompt_ids.shape}"
               if isinstance(prompt_ids, np.ndarray) else type(prompt_ids).__name__)
        raise ValueError(f"prompt_ids: expected a (B, T) integer array, got {got}")
    real = real_tokens(prompt_ids, pad_id)                                # (B, T)
    lengths = real.sum(axis=1)
    inside = real & (np.arange(real.shape[1]) >= lengths[:, None])        # a token after a pad
    if inside.any() or (lengths == 0).any():
        row = int(np.flatnonzero(inside.any(axis=1) | (lengths == 0))[0])
        raise ValueError(f"prompt_ids[{row}]: expected a non-empty prompt followed only by the pad "
                         f"id {pad_id} (right padding), got {prompt_ids[row].tolist()}")
    return lengths


def generate(model: DecoderOnlyTransformer, prompt_ids: np.ndarray, max_new_tokens: int,
             use_cache: bool = True, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, rng: np.random.Generator | None = None,
             stop_at_eos: bool = True, return_logits: bool = False):
    """Continue each prompt by up to ``max_new_tokens`` tokens; returns the new tokens
    (B, <= max_new_tokens), each row ending at its eos and filled after it (``fill_id``:
    pad, or eos where the vocabulary has no padding), or a ``Decoded`` with ``return_logits``.

    ``temperature`` 0 is greedy. Above 0, each token is drawn from
    softmax(logits / temperature), over the ``top_k`` most likely tokens if given, then
    over the nucleus of probability ``top_p`` if given (``sampling.py``: the smallest set
    of most likely tokens whose probabilities sum to at least ``top_p``), with ``rng`` (a
    seeded ``np.random.Generator``; required, nothing is global).

    Prompts are right-padded (each prompt, then the pad id), as ``LMBatch.prompt``; where
    the model's vocabulary has no padding (``pad_id`` None), every prompt is its whole row.
    Every row moves one position per step, so each token sits at its true
    position and one offset serves the whole batch: a row still inside its
    prompt is fed its next prompt token (its prediction is not used), a row past
    it is fed what it generated. The first step feeds the part every prompt
    has, the shortest prompt's length, at once.
    """
    _check_model(model, DecoderOnlyTransformer, "generate", "use greedy_decode() for a Transformer")
    lengths = _prompt_lengths(prompt_ids, model.config.pad_id)
    first, last = int(lengths.min()), int(lengths.max())
    _check_count("max_new_tokens", max_new_tokens, 1, model.config.max_len + 1 - last,
                 f"the longest prompt has {last} tokens and the model's max_len is {model.config.max_len}")
    total = last + max_new_tokens                    # positions of the longest prompt and its answer
    if not temperature >= 0:
        raise ValueError(f"temperature: expected a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None:
        _check_count("top_k", top_k, 1, model.config.vocab_size, "at most vocab_size")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected a probability in (0, 1] (1 keeps every token), got {top_p!r}")
    if temperature > 0 and not isinstance(rng, np.random.Generator):
        raise TypeError("rng: sampling (temperature > 0) needs a np.random.Generator, "
                        "e.g. np.random.default_rng(0)")
    B, eos = len(prompt_ids), model.config.eos_id
    seq = np.full((B, total), fill_id(model.config), dtype=np.int64)   # (B, total) prompt, then the answer
    seq[:, :last] = prompt_ids[:, :last]
    n_new = np.zeros(B, dtype=np.int64)              # tokens generated per row, eos included
    finished = np.zeros(B, dtype=bool)               # has its eos
    step_logits = []
    with inference(model):
        next_logits, _ = _next_logits(model, use_cache, total - 1, B)   # the last token is never fed
        for t in range(first, total):                # choose the token at position t
            logits = next_logits(seq[:, :t])          # (B, V), from the token at t - 1
            token = choose_next(never_emitted(model, logits), temperature, top_k, top_p, rng)
            active = (t >= lengths) & ~finished & (n_new < max_new_tokens)
            seq[active, t] = token[active]
            n_new += active
            finished |= active & (token == eos)
            if return_logits:
                step_logits.append(logits)
            if stop_at_eos and (finished | (n_new == max_new_tokens)).all():
                break
    width = int(n_new.max()) if stop_at_eos else max_new_tokens
    answer = lengths[:, None] + np.arange(width)                          # (B, width) positions
    tokens = np.take_along_axis(seq, answer, axis=1)
    if not return_logits:
        return tokens
    step_logits = np.stack(step_logits, axis=1)                           # (B, steps, V)
    steps = np.minimum(answer - first, step_logits.shape[1] - 1)          # step that chose each token
    return Decoded(tokens, np.take_along_axis(step_logits, steps[..., None], axis=1))


# ---- beam search (encoder-decoder) ---------------------------------------------------------


def beam_search(model: Transformer, src_ids: np.ndarray, max_len: int, beam_size: int = 4,
                length_penalty: float = 0.0, use_cache: bool = True):
    """Keep the ``beam_size`` best hypotheses per source at every step; return the best.

    Returns ``(tokens, log_probs)``: tokens (B, <= max_len) without bos, each row
    ending at its eos and filled after it (``fill_id``: pad, or eos where there is
    none); log_probs (B,) float64, each row's log-probability
    sum_i log p(y_i | y_<i, source), eos included.

    A step extends every hypothesis of a source by each of the V tokens and
    keeps the K best of the K * V candidates. A finished hypothesis (it ended
    with eos) stays finished: its only continuation is the fill, at no cost, so it
    stays in the beam until K better ones push it out; and the best finished
    hypothesis is also kept aside, so being pushed out never loses it.

    Ranking: score = log_prob / length ** length_penalty, with length the number
    of tokens up to and including eos. ``length_penalty=0`` ranks by the
    log-probability itself, which favours short outputs (every token multiplies
    in a probability below 1); 1 ranks by the mean log-probability per token.
    Unfinished hypotheses always have the same length, so the penalty only
    matters against finished ones, and in the final pick.

    The search stops when every hypothesis is finished or after ``max_len``
    tokens; with ``length_penalty=0`` also as soon as each source's best
    finished hypothesis scores at least as high as all its unfinished ones
    (log-probabilities only fall as a hypothesis grows: none can overtake it).
    ``beam_size=1`` is greedy decoding. A larger beam usually finds a more
    probable output than greedy, but not always: the greedy output's prefix
    can fall out of the beam early, behind K prefixes that later do worse.
    """
    _check_model(model, Transformer, "beam_search", "beam search is implemented for the encoder-decoder")
    _check_count("max_len", max_len, 1, model.config.max_len, "the model's max_len")
    V = model.config.vocab_size
    _check_count("beam_size", beam_size, 1, V, "the first step has only vocab_size candidates")
    K = beam_size
    bos, eos, fill = start_id(model, "beam_search"), model.config.eos_id, fill_id(model.config)
    with inference(model):
        memory, src_keys = model.encode(src_ids)                   # (B, S, D)
        B = len(memory)
        sources = np.arange(B)
        tokens = np.full((B * K, 1 + max_len), fill, dtype=np.int64)  # beam j of source b: row b*K + j
        tokens[:, 0] = bos
        log_prob = np.full((B, K), -np.inf)
        log_prob[:, 0] = 0.0           # one live start per source: K copies of BOS would repeat it
        length = np.zeros((B, K), dtype=np.int64)
        finished = np.zeros((B, K), dtype=bool)
        kept = {"score": np.full(B, -np.inf), "log_prob": np.full(B, -np.inf),   # the best finished
                "length": np.ones(B, dtype=np.int64), "tokens": tokens[::K].copy()}  # one so far
        memory, src_keys = np.repeat(memory, K, axis=0), np.repeat(src_keys, K, axis=0)
        next_logits, cache = _next_logits(model, use_cache, max_len, B * K, memory, src_keys)
        for t in range(max_len):
            # the model's log-probabilities, with pad and bos never chosen (never_emitted)
            logp = never_emitted(model, log_softmax(next_logits(tokens[:, :t + 1]))).reshape(B, K, V)
            logp[finished] = -np.inf           # a finished hypothesis continues with the fill only,
            logp[finished, fill] = 0.0         # at no cost
            candidate_log_prob = (log_prob[:, :, None] + logp).reshape(B, K * V)
            candidate_length = np.repeat(length + ~finished, V, axis=1)           # (B, K * V)
            score = candidate_log_prob / candidate_length ** length_penalty
            best = np.argsort(-score, axis=1, kind="stable")[:, :K]               # (B, K)
            parent, token = np.divmod(best, V)
            log_prob = np.take_along_axis(candidate_log_prob, best, axis=1)
            length = np.take_along_axis(candidate_length, best, axis=1)
            finished = np.take_along_axis(finished, parent, axis=1) | (token == eos)
            rows = (sources[:, None] * K + parent).reshape(-1)                    # (B * K,)
            tokens = tokens[rows]              # each hypothesis takes its parent's tokens ...
            tokens[:, t + 1] = token.reshape(-1)
            if cache is not None:
                cache.reorder_beams(rows)      # ... and its parent's keys and values
            done = np.where(finished, np.take_along_axis(score, best, axis=1), -np.inf)
            j = done.argmax(axis=1)
            better = done[sources, j] > kept["score"]
            kept["score"][better] = done[sources, j][better]
            kept["log_prob"][better] = log_prob[sources, j][better]
            kept["length"][better] = length[sources, j][better]
            kept["tokens"][better] = tokens[sources * K + j][better]
            best_open = np.where(finished, -np.inf, log_prob).max(axis=1)
            if finished.all() or (length_penalty == 0 and (kept["log_prob"] >= best_open).all()):
                break
    # the answer: the best finished hypothesis, or an unfinished one that scores higher at max_len
    score = log_prob / length ** length_penalty
    j = score.argmax(axis=1)
    use_beam = score[sources, j] > kept["score"]
    out_tokens = np.where(use_beam[:, None], tokens[sources * K + j], kept["tokens"])[:, 1:]
    out_length = np.where(use_beam, length[sources, j], kept["length"])
    out_log_prob = np.where(use_beam, log_prob[sources, j], kept["log_prob"])
    return out_tokens[:, :int(out_length.max())], out_log_prob


def sequence_log_prob(model: Transformer, src_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log p(tokens | source) (B,) float64, summed up to and including each row's first eos.

    Scores an output (without bos, as the decoders here return it) with one
    teacher-forced forward: position i is fed bos y_1 .. y_{i-1} and scored on y_i
    (bos and eos are the model's ``config.bos_id`` and ``config.eos_id``).
    """
    _check_model(model, Transformer, "sequence_log_prob", "it scores encoder-decoder outputs")
    bos = start_id(model, "sequence_log_prob")
    tgt_in = np.concatenate([np.full((len(tokens), 1), bos, dtype=tokens.dtype), tokens[:, :-1]], axis=1)
    with inference(model):
        logp = log_softmax(model(src_ids, tgt_in))                              # (B, T, V)
    picked = np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]     # (B, T)
    is_eos = tokens == model.config.eos_id
    counted = np.cumsum(is_eos, axis=1) - is_eos == 0               # no EOS before this position
    return np.where(counted, picked, 0.0).sum(axis=1)
