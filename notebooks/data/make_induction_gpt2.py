"""Write notebooks/data/induction_gpt2/: a small GPT-2 trained until an induction head forms.

Notebook 10 measures previous-token and induction heads. In a random model there are none,
and training one takes a few minutes on two cores (longer than a notebook in the test suite
should run), so this script trains it once and writes it with ``save_pretrained``:

- the model: GPT-2's layout (learned positions, pre-LN, tanh GELU, tied head, no sqrt(D)
  scale), 2 layers, d_model 64, 4 heads, d_ff 256, vocabulary 512, 128 positions;
- the data: L random tokens, then the same L again (2L - 1 inputs and labels), batch 32, a
  fresh batch each step with L drawn from 10..30; the first half cannot be predicted (loss
  ln 512 = 6.24), the second half can, by an induction head: find the earlier copy of the
  current token and read the token that came after it. With one fixed L a single head of the
  first layer learns to attend L - 1 positions back by position alone, no induction needed;
  a varying L rules that out;
- AdamW, learning rate 3e-3, betas (0.9, 0.99), no weight decay, 3500 steps, seed 0. The loss
  of the second half stays near ln 512 for a few hundred steps, then falls within ~100 (the
  phase change in which the induction head forms).

    python notebooks/data/make_induction_gpt2.py      # a few minutes; writes about 0.6 MB
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytransformer import AdamW, DecoderOnlyTransformer, TransformerConfig, save_pretrained
from tinytransformer.nn.loss import CrossEntropyLoss

OUT = Path(__file__).resolve().parent / "induction_gpt2"
HALVES, BATCH, STEPS = (10, 30), 32, 3500
GPT2_LAYOUT = dict(n_encoder_layers=0, norm_first=True, activation="gelu_tanh", positional="learned",
                   norm="layernorm", bias=True, head_bias=False, embed_scale=False, tie_embeddings=True,
                   pad_id=None, bos_id=None)


def repeated(rng: np.random.Generator, batch: int, half: int, vocab_size: int):
    """Inputs and labels (B, 2 * half - 1) of random sequences written twice."""
    first = rng.integers(0, vocab_size, size=(batch, half))
    seq = np.concatenate([first, first], axis=1)                # (B, 2 * half)
    return seq[:, :-1], seq[:, 1:]


def main() -> None:
    config = TransformerConfig(vocab_size=512, d_model=64, n_heads=4, d_ff=256, n_decoder_layers=2,
                               max_len=128, eos_id=511, **GPT2_LAYOUT)
    rng = np.random.default_rng(0)
    model = DecoderOnlyTransformer(config, rng=rng)
    opt = AdamW(model, lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    crit = CrossEntropyLoss()
    for step in range(1, STEPS + 1):
        half = int(rng.integers(HALVES[0], HALVES[1] + 1))
        ids, labels = repeated(rng, BATCH, half, config.vocab_size)
        model.zero_grad()
        loss = crit(model(ids), labels)
        model.backward(crit.backward())
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss:.3f} (L = {half}; about 3 once the second half is predicted)")
    save_pretrained(model.eval(), OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
