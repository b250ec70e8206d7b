"""Token <-> id vocabulary with the four special tokens every seq2seq model needs.

vocab = Vocab.build(token_sequences, min_freq=2)
ids = vocab.encode(["hello", "world"], add_eos=True)
vocab.decode(ids)                 # ["hello", "world"]
Vocab.from_dict(vocab.to_dict())  # plain JSON-able data, for checkpoints
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

_FORMAT = "fast_s2s.vocab"
_VERSION = 1


class Vocab:
    """An ordered token list; a token's id is its position.

    The specials are always the first four tokens, in the order pad, bos, eos, unk, so their ids
    are the class constants below whatever the data.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, tokens: list[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"Vocab tokens must start with the specials {list(SPECIALS)}, "
                f"got {tokens[: len(SPECIALS)]!r}"
            )
        for position, token in enumerate(tokens):
            if not isinstance(token, str):
                raise ValueError(
                    f"Vocab tokens must be strings, got {type(token).__name__} "
                    f"{token!r} at position {position}"
                )
        index: dict[str, int] = {}
        for position, token in enumerate(tokens):
            if token in index:
                raise ValueError(
                    f"Vocab token {token!r} appears twice (positions {index[token]} and {position})"
                )
            index[token] = position
        self._tokens = tokens
        self._index = index

    @classmethod
    def build(
        cls,
        sequences: Iterable[list[str]],
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Count the tokens of `sequences` and keep those seen at least `min_freq` times.

        Order is deterministic: by frequency, most frequent first, ties by token. `max_size`
        bounds the number of ordinary (non-special) tokens kept; None keeps all. Tokens equal to
        a special's spelling are not added twice: they map to that special.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        counts: Counter[str] = Counter()
        for sequence in sequences:
            counts.update(sequence)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted(
            (token for token, count in counts.items() if count >= min_freq),
            key=lambda token: (-counts[token], token),
        )
        if max_size is not None:
            kept = kept[:max_size]
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(tuple(self._tokens))

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order (a copy), specials first."""
        return list(self._tokens)

    def index(self, token: str) -> int:
        """The id of `token`, or unk_id when it is not in the vocabulary."""
        return self._index.get(token, self.unk_id)

    def token(self, token_id: int) -> str:
        """The token with id `token_id`; ValueError when out of range."""
        token_id = int(token_id)
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} is out of range for a vocabulary of {len(self)}")
        return self._tokens[token_id]

    def encode(self, tokens: list[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Map tokens to ids (unknown tokens to unk_id), optionally wrapped in bos/eos."""
        ids = [self._index.get(token, self.unk_id) for token in tokens]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Map ids back to tokens, stopping at the first eos.

        With strip_special, bos and pad are dropped and the eos is not returned; without it they
        are kept (the eos included). Unknown ids come back as "<unk>". Accepts any iterable of
        ints, a 1-D tensor included.
        """
        out: list[str] = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == self.eos_id:
                if not strip_special:
                    out.append(EOS)
                break
            if strip_special and token_id in (self.bos_id, self.pad_id):
                continue
            out.append(self.token(token_id))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data for a checkpoint; the inverse of from_dict."""
        return {"format": _FORMAT, "version": _VERSION, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Rebuild a Vocab saved by to_dict; ValueError saying what is wrong otherwise."""
        if not isinstance(d, dict):
            raise ValueError(f"a saved vocabulary must be a dict, got {type(d).__name__}")
        if d.get("format") != _FORMAT:
            raise ValueError(
                f"not a saved vocabulary: expected format {_FORMAT!r}, got {d.get('format')!r}"
            )
        if d.get("version") != _VERSION:
            raise ValueError(
                f"saved vocabulary has version {d.get('version')!r}; this fast_s2s reads "
                f"version {_VERSION}"
            )
        tokens = d.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError(
                f"saved vocabulary: 'tokens' must be a list, got {type(tokens).__name__}"
            )
        try:
            return cls(tokens)
        except ValueError as error:
            raise ValueError(f"saved vocabulary is invalid: {error}") from None
