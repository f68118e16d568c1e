"""The default seq2seq model written in PyTorch, as a PyTorch user would write it: the peer
that bench/default.py measures ours against.

The model is `Config()`'s default network (src/seq2seq/model.py, attention.py):

    source ids (B, S) -> nn.Embedding (E) -> dropout -> bidirectional nn.LSTM (H/2 a
        direction, packed: padding skipped) -> memory (B, S, H), final [h_fwd; h_bwd],
        [c_fwd; c_bwd] (B, H)
    keys = memory @ W_a (B, S, H)                              (Luong "general", once per sentence)
    decoder input ids (B, T) -> nn.Embedding (E, tied) -> dropout; then per step t
        h, c = LSTMCell([emb_t; h~_{t-1}], (h, c))           (input feeding, h~_0 = 0)
        a = softmax(keys . h) over real source positions; context = a @ memory
        h~_t = tanh(W_c [context; h])                         (no bias)
    logits = (dropout(h~) @ W_bridge + b_bridge) @ embedding^T (B, T, V)  (bridge: H != E)

B batch, S and T source and target steps, E `embedding_dim`, H `latent_dim`, V the
target vocabulary. Ours computes the LSTMs' input products x @ W before the loop; here
nn.LSTM and nn.LSTMCell hold W as `weight_ih`, so the same weights give the same logits
(tests/test_torch_peer.py copies a Keras model's weights with `load_keras_weights`).
Weights are initialised as Keras initialises ours (uniform embeddings, Glorot kernels,
orthogonal recurrent kernels, forget-gate bias 1), so training curves compare the two
frameworks, not two initialisations.

Training: label-smoothed cross-entropy over non-<pad> targets (`ignore_index=0`), Adam,
gradient-norm clipping. Decoding: batched greedy and beam search with ours' rules
(<pad> and <start> never chosen, stop at <end>, GNMT length penalty), see decoding.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD_ID, START_ID, END_ID = 0, 1, 2  # seq2seq.vocab's special ids
NEGATIVE = -1e9  # score of what must not be chosen (padded source positions, <pad> and <start> outputs)


@dataclass(frozen=True)
class PeerConfig:
    """The settings of `Config()` that decide the network and its training."""

    source_vocab: int
    target_vocab: int
    embedding_dim: int = 256
    latent_dim: int = 384
    dropout: float = 0.3
    learning_rate: float = 2e-3
    clip_norm: float = 5.0
    label_smoothing: float = 0.1


def _glorot_(weight: torch.Tensor) -> None:
    """Keras's glorot_uniform on a torch (out, in) weight: the same limit sqrt(6 / (in + out))."""
    nn.init.xavier_uniform_(weight)


class Peer(nn.Module):
    """The default network. forward(source ids (B, S), decoder input ids (B, T)) -> logits (B, T, V)."""

    def __init__(self, config: PeerConfig) -> None:
        super().__init__()
        self.config = config
        e, h = config.embedding_dim, config.latent_dim
        if h % 2:
            raise ValueError(f"latent_dim must be even (two directions), got {h}")
        self.source_embedding = nn.Embedding(config.source_vocab, e)
        self.target_embedding = nn.Embedding(config.target_vocab, e)  # also the output layer (tied)
        self.encoder = nn.LSTM(e, h // 2, batch_first=True, bidirectional=True)
        self.decoder_cell = nn.LSTMCell(e + h, h)  # input: [embedding; h~ of the previous step]
        self.attention_keys = nn.Linear(h, h, bias=False)
        self.combine = nn.Linear(2 * h, h, bias=False)
        self.output_bridge = nn.Linear(h, e) if h != e else None
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters()
        self.step: Callable = self.decoder_step  # replaced by a compiled one with `compile_step`

    def reset_parameters(self) -> None:
        """Keras's initialisers for the same weights (see the module docstring)."""
        e = self.config.embedding_dim
        with torch.no_grad():
            for embedding in (self.source_embedding, self.target_embedding):
                nn.init.uniform_(embedding.weight, -0.05, 0.05)
            for suffix in ("", "_reverse"):
                _glorot_(getattr(self.encoder, f"weight_ih_l0{suffix}"))
                _init_recurrent(getattr(self.encoder, f"weight_hh_l0{suffix}"))
                _init_biases(getattr(self.encoder, f"bias_ih_l0{suffix}"), getattr(self.encoder, f"bias_hh_l0{suffix}"))
            # ours has two kernels here, the token's projection and input feeding's
            _glorot_(self.decoder_cell.weight_ih[:, :e])
            _glorot_(self.decoder_cell.weight_ih[:, e:])
            _init_recurrent(self.decoder_cell.weight_hh)
            _init_biases(self.decoder_cell.bias_ih, self.decoder_cell.bias_hh)
            _glorot_(self.attention_keys.weight)
            _glorot_(self.combine.weight)
            if self.output_bridge is not None:
                _glorot_(self.output_bridge.weight)
                nn.init.zeros_(self.output_bridge.bias)

    def encode(self, source_ids: torch.Tensor):
        """source ids (B, S) -> memory (B, S, H), keys (B, S, H), source mask (B, S) bool,
        initial decoder state (h, c), each (B, H)."""
        mask = source_ids != PAD_ID
        # A row of <pad> only (the batches' filler rows) is packed as one step: packing
        # needs a length of at least 1, and the loss ignores such rows.
        lengths = mask.sum(1).clamp(min=1).cpu()
        x = self.dropout(self.source_embedding(source_ids))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        outputs, (h, c) = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source_ids.shape[1])
        # h, c: (2 directions, B, H/2) -> (B, H), forward then backward as ours concatenates them
        state = (torch.cat([h[0], h[1]], dim=-1), torch.cat([c[0], c[1]], dim=-1))
        return memory, self.attention_keys(memory), mask, state

    def decoder_step(
        self,
        embedded: torch.Tensor,
        feed: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        memory: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One target token: embedded (B, E), h~_{t-1}, h, c (B, H) -> h~_t, h, c (B, H)."""
        h, c = self.decoder_cell(torch.cat([embedded, feed], dim=-1), (h, c))
        scores = torch.bmm(keys, h.unsqueeze(2)).squeeze(2).masked_fill(~mask, NEGATIVE)  # (B, S)
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, H)
        attentional = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))
        return attentional, h, c

    def output_logits(self, attentional: torch.Tensor) -> torch.Tensor:
        """h~ (..., H) -> logits (..., V) through the tied target embedding."""
        x = self.dropout(attentional)
        if self.output_bridge is not None:
            x = self.output_bridge(x)
        return F.linear(x, self.target_embedding.weight)

    def forward(self, source_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        memory, keys, mask, (h, c) = self.encode(source_ids)
        embedded = self.dropout(self.target_embedding(decoder_input_ids))  # (B, T, E)
        feed = memory.new_zeros(memory.shape[0], self.config.latent_dim)
        outputs = []
        for t in range(decoder_input_ids.shape[1]):
            feed, h, c = self.step(embedded[:, t], feed, h, c, memory, keys, mask)
            outputs.append(feed)
        return self.output_logits(torch.stack(outputs, dim=1))

    def compile_step(self, **options) -> None:
        """Run the decoder step through `torch.compile` (the loop over timesteps stays in
        Python: compiling the whole forward pass would unroll it for every target length)."""
        self.step = torch.compile(self.decoder_step, **options)

    # --- decoding -------------------------------------------------------------------

    def _next_logits(self, previous: torch.Tensor, feed, h, c, memory, keys, mask):
        """previous ids (N,) -> log-probabilities' logits (N, V) with <pad> and <start> ruled out, new state."""
        feed, h, c = self.step(self.target_embedding(previous), feed, h, c, memory, keys, mask)
        logits = self.output_logits(feed)
        logits[:, PAD_ID] = NEGATIVE
        logits[:, START_ID] = NEGATIVE
        return logits, feed, h, c

    @torch.inference_mode()
    def greedy(self, source_ids: torch.Tensor, max_length: int) -> torch.Tensor:
        """source ids (B, S) -> target ids (B, max_length): the most probable token each step,
        <pad> after a row's <end>; stops when every row has ended."""
        memory, keys, mask, (h, c) = self.encode(source_ids)
        batch = source_ids.shape[0]
        feed = memory.new_zeros(batch, self.config.latent_dim)
        output = torch.full((batch, max_length), PAD_ID, dtype=torch.long)
        previous = torch.full((batch,), START_ID, dtype=torch.long)
        finished = torch.zeros(batch, dtype=torch.bool)
        for t in range(max_length):
            logits, feed, h, c = self._next_logits(previous, feed, h, c, memory, keys, mask)
            token = logits.argmax(-1).masked_fill(finished, PAD_ID)
            output[:, t] = token
            finished |= token == END_ID
            previous = token
            if bool(finished.all()):
                break
        return output

    @torch.inference_mode()
    def beam_search(self, source_ids: torch.Tensor, max_length: int, beam: int = 5, alpha: float = 0.6):
        """source ids (B, S) -> best target ids (B, max_length), their normalised scores (B,).

        decoding.BeamSearchDecoder's search: the `beam` best hypotheses of each sentence
        by log-probability / ((5 + length) / 6) ** alpha, a finished hypothesis frozen with
        its length and score; a sentence is done when its best hypothesis has ended."""
        k = beam
        memory, keys, mask, (h, c) = self.encode(source_ids)
        batch = source_ids.shape[0]
        memory, keys, mask, h, c = (x.repeat_interleave(k, dim=0) for x in (memory, keys, mask, h, c))
        feed = memory.new_zeros(batch * k, self.config.latent_dim)
        tokens = torch.full((batch, k, max_length), PAD_ID, dtype=torch.long)
        scores = torch.full((batch, k), NEGATIVE)
        scores[:, 0] = 0.0  # only the first beam is live at the start
        lengths = torch.zeros((batch, k), dtype=torch.long)
        finished = torch.zeros((batch, k), dtype=torch.bool)
        done = torch.zeros(batch, dtype=torch.bool)
        previous = torch.full((batch * k,), START_ID, dtype=torch.long)
        beam_rows = (torch.arange(batch) * k).unsqueeze(1)  # (B, 1)
        pad_only = torch.full((self.config.target_vocab,), NEGATIVE)
        pad_only[PAD_ID] = 0.0
        for t in range(max_length):
            logits, feed, h, c = self._next_logits(previous, feed, h, c, memory, keys, mask)
            vocab = logits.shape[-1]
            log_probs = torch.log_softmax(logits, dim=-1).view(batch, k, vocab)
            frozen = finished | done.unsqueeze(1)  # continues only with <pad>, at no cost
            log_probs = torch.where(frozen.unsqueeze(-1), pad_only, log_probs)
            candidates = scores.unsqueeze(-1) + log_probs  # (B, K, V)
            candidate_lengths = torch.where(frozen, lengths, t + 1)
            ranked = candidates / length_penalty(candidate_lengths, alpha).unsqueeze(-1)
            best = ranked.view(batch, k * vocab).topk(k, dim=1).indices  # (B, K), best first
            origin, token = best // vocab, best % vocab
            scores = candidates.view(batch, k * vocab).gather(1, best)
            was_frozen = frozen.gather(1, origin)
            lengths = torch.where(was_frozen, candidate_lengths.gather(1, origin), t + 1)
            finished = finished.gather(1, origin) | (token == END_ID)
            tokens = tokens.gather(1, origin.unsqueeze(-1).expand(-1, -1, max_length)).clone()
            tokens[:, :, t] = token
            done |= finished[:, 0]
            rows = (beam_rows + origin).view(-1)
            feed, h, c = feed[rows], h[rows], c[rows]
            previous = token.view(-1)
            if bool(done.all()):
                break
        normalised = scores / length_penalty(lengths, alpha)
        return tokens[:, 0], normalised[:, 0]


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's length normalisation: ((5 + length) / 6) ** alpha."""
    return ((5.0 + length.float()) / 6.0) ** alpha


def _init_recurrent(weight: torch.Tensor) -> None:
    """Keras's orthogonal initialiser of a (H, 4H) recurrent kernel, for torch's (4H, H)."""
    weight.copy_(nn.init.orthogonal_(torch.empty(weight.shape[1], weight.shape[0])).T)


def _init_biases(bias_ih: torch.Tensor, bias_hh: torch.Tensor) -> None:
    """Keras's LSTM bias: zeros, ones for the forget gate (i, f, g, o: the same order in
    both), held in bias_ih; bias_hh stays zero, so b = bias_ih + bias_hh."""
    units = bias_ih.shape[0] // 4
    nn.init.zeros_(bias_ih)
    nn.init.zeros_(bias_hh)
    bias_ih[units : 2 * units] = 1.0


# --- training -----------------------------------------------------------------------


class Trainer:
    """Adam with gradient-norm clipping on label-smoothed cross-entropy over non-<pad> targets.

    Keras's Adam adds epsilon 1e-7 (torch's default is 1e-8): set to ours."""

    def __init__(self, model: Peer) -> None:
        self.model = model
        config = model.config
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=1e-7)
        self.loss = nn.CrossEntropyLoss(ignore_index=PAD_ID, label_smoothing=config.label_smoothing)

    def train_step(
        self, source_ids: np.ndarray, decoder_input_ids: np.ndarray, decoder_target_ids: np.ndarray
    ) -> float:
        """One update on a batch of padded id arrays (B, S), (B, T), (B, T); returns the loss."""
        self.model.train()
        source, inputs, targets = (
            torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (source_ids, decoder_input_ids, decoder_target_ids)
        )
        logits = self.model(source, inputs)
        loss = self.loss(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.model.config.clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.model.config.clip_norm)
        self.optimizer.step()
        return loss.item()


# --- decoding lists of sentences ------------------------------------------------------


def output_limit(longest_source: int, max_length: int, ratio: float | None, margin: int = 10, multiple: int = 8) -> int:
    """api.Seq2Seq.output_limit: `max_length`, and no more than ratio x the batch's
    longest source + margin, rounded up to `multiple`."""
    if ratio is None:
        return max_length
    limit = math.ceil(ratio * longest_source) + margin
    return min(max_length, -(-limit // multiple) * multiple)


def padded_length(length: int) -> int:
    """batches.padded_length: multiples of 4 up to 32, of 8 up to 64, of 16 up to 128, then of 32."""
    step = next((step for limit, step in ((32, 4), (64, 8), (128, 16)) if length <= limit), 32)
    return max(step, math.ceil(length / step) * step)


def pad(sequences: list[list[int]], length: int) -> np.ndarray:
    """(N, length) int64 array of the sequences, right-padded with <pad>."""
    out = np.full((len(sequences), length), PAD_ID, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


def generate(
    model: Peer,
    source_ids: list[list[int]],
    max_length: int,
    ratio: float | None,
    beam: int = 1,
    batch_size: int = 64,
    alpha: float = 0.6,
) -> list[list[int]]:
    """Target ids (up to and including <end>) for each source id list, as api.Seq2Seq.generate
    batches them: sorted by length, `batch_size` at a time, each batch's outputs limited by
    `output_limit`; an empty input gives an empty output."""
    model.eval()
    results: list[list[int]] = [[] for _ in source_ids]
    order = sorted((i for i, s in enumerate(source_ids) if s), key=lambda i: len(source_ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        longest = max(len(source_ids[i]) for i in rows)
        batch = torch.from_numpy(pad([source_ids[i] for i in rows], padded_length(longest)))
        limit = output_limit(longest, max_length, ratio)
        ids = model.greedy(batch, limit) if beam == 1 else model.beam_search(batch, limit, beam, alpha)[0]
        for row, i in enumerate(rows):
            results[i] = until_end(ids[row].tolist())
    return results


def until_end(ids: list[int]) -> list[int]:
    """Generated ids up to and including <end>; <pad> marks that nothing more came."""
    out = []
    for i in ids:
        if i == PAD_ID:
            break
        out.append(i)
        if i == END_ID:
            break
    return out


# --- weights from the Keras model ------------------------------------------------------


def keras_weights(model) -> dict[str, np.ndarray]:
    """A Keras seq2seq model's weights by name, without Keras's generated cell names:
    'source_embedding/embeddings', 'encoder_lstm/recurrent_kernel', 'decoder/cell_1/bias', ..."""
    weights = {}
    for variable in model.weights:
        parts = [p for p in variable.path.split("/") if not p.startswith("projected_lstm_cell")]
        weights["/".join(parts)] = np.asarray(variable.numpy())
    return weights


def load_keras_weights(model: Peer, weights: Mapping[str, np.ndarray]) -> None:
    """Copy the weights of ours (`keras_weights`) into the peer. Keras kernels are (in, out),
    torch's (out, in); the gate order is i, f, g, o in both; Keras's one LSTM bias b goes
    into bias_ih, with bias_hh zero."""
    units = model.config.latent_dim // 2

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(weights[name]))

    with torch.no_grad():
        model.source_embedding.weight.copy_(t("source_embedding/embeddings"))
        model.target_embedding.weight.copy_(t("target_embedding/embeddings"))
        projection = t("source_projection/kernel")  # (E, 2 x 4 x H/2): forward, then backward columns
        for suffix, layer, columns in (
            ("", "encoder_lstm", slice(0, 4 * units)),
            ("_reverse", "encoder_lstm_backward", slice(4 * units, 8 * units)),
        ):
            getattr(model.encoder, f"weight_ih_l0{suffix}").copy_(projection[:, columns].T)
            getattr(model.encoder, f"weight_hh_l0{suffix}").copy_(t(f"{layer}/recurrent_kernel").T)
            getattr(model.encoder, f"bias_ih_l0{suffix}").copy_(t(f"{layer}/bias"))
            getattr(model.encoder, f"bias_hh_l0{suffix}").zero_()
        # the cell's input is [embedding; h~]: ours projects each with its own kernel
        kernel = torch.cat([t("target_projection/kernel"), t("decoder/feed/kernel")], dim=0)
        model.decoder_cell.weight_ih.copy_(kernel.T)
        model.decoder_cell.weight_hh.copy_(t("decoder/cell_1/recurrent_kernel").T)
        model.decoder_cell.bias_ih.copy_(t("decoder/cell_1/bias"))
        model.decoder_cell.bias_hh.zero_()
        model.attention_keys.weight.copy_(t("attention_keys/kernel").T)
        model.combine.weight.copy_(t("decoder/combine/kernel").T)
        if model.output_bridge is not None:
            model.output_bridge.weight.copy_(t("output_bridge/kernel").T)
            model.output_bridge.bias.copy_(t("output_bridge/bias"))
