"""fast_s2s.data: vocabulary, tokenisation, generated tasks, the TSV reader and batching."""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import re

import pytest
import torch

from fast_s2s.data import (
    DATE_PATTERNS,
    TASKS,
    Batch,
    CorpusFormatError,
    Vocab,
    build_vocabs,
    detokenize,
    encode_pairs,
    filter_by_length,
    format_date,
    generate_pairs,
    make_batches,
    random_date_pair,
    read_tsv,
    split,
    task_tokenization,
    tokenize,
    tokenize_pairs,
)
from fast_s2s.data.dates import WEEKDAYS
from fast_s2s.data.numbers import number_to_words

# ----------------------------------------------------------------------------------- vocabulary


def test_vocab_specials_come_first():
    vocab = Vocab.build([["b", "a"]])
    assert vocab.tokens[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)


def test_vocab_build_orders_by_frequency_then_token_and_applies_min_freq():
    sequences = [["c", "b", "a"], ["b", "c", "d"], ["c", "e"], ["e"]]
    vocab = Vocab.build(sequences)
    assert vocab.tokens[4:] == ["c", "b", "e", "a", "d"]
    assert len(vocab) == 9
    vocab2 = Vocab.build(sequences, min_freq=2)
    assert vocab2.tokens[4:] == ["c", "b", "e"]
    assert Vocab.build(sequences, max_size=2).tokens[4:] == ["c", "b"]
    # Deterministic whatever the input order.
    assert Vocab.build(list(reversed(sequences))) == vocab


def test_vocab_build_does_not_duplicate_specials_in_data():
    vocab = Vocab.build([["<unk>", "x", "</s>"]])
    assert vocab.tokens == ["<pad>", "<s>", "</s>", "<unk>", "x"]


def test_vocab_unknown_tokens_map_to_unk():
    vocab = Vocab.build([["a", "b"]])
    ids = vocab.encode(["a", "zzz", "b"], add_bos=True, add_eos=True)
    assert ids == [1, vocab.index("a"), 3, vocab.index("b"), 2]
    assert vocab.decode(ids) == ["a", "<unk>", "b"]


def test_vocab_decode_stops_at_eos_and_strips_specials():
    vocab = Vocab.build([["a", "b"]])
    a, b = vocab.index("a"), vocab.index("b")
    ids = [1, a, 0, b, 2, a, a]
    assert vocab.decode(ids) == ["a", "b"]
    assert vocab.decode(ids, strip_special=False) == ["<s>", "a", "<pad>", "b", "</s>"]
    assert vocab.decode(torch.tensor(ids)) == ["a", "b"]
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([len(vocab)])


def test_vocab_dict_round_trip_through_json():
    vocab = Vocab.build([list("hello world"), list("héllo")])
    restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    assert restored.tokens == vocab.tokens
    assert restored.encode(list("hé?")) == vocab.encode(list("hé?"))


@pytest.mark.parametrize(
    "bad, message",
    [
        ([1, 2], "must be a dict"),
        ({"tokens": ["<pad>", "<s>", "</s>", "<unk>"]}, "format"),
        ({"format": "fast_s2s.vocab", "version": 99, "tokens": []}, "version"),
        ({"format": "fast_s2s.vocab", "version": 1, "tokens": "abc"}, "must be a list"),
        ({"format": "fast_s2s.vocab", "version": 1, "tokens": ["a", "<pad>"]}, "specials"),
        (
            {
                "format": "fast_s2s.vocab",
                "version": 1,
                "tokens": ["<pad>", "<s>", "</s>", "<unk>", "a", "a"],
            },
            "twice",
        ),
        (
            {
                "format": "fast_s2s.vocab",
                "version": 1,
                "tokens": ["<pad>", "<s>", "</s>", "<unk>", 7],
            },
            "strings",
        ),
    ],
    ids=["not-dict", "no-format", "version", "tokens-str", "no-specials", "duplicate", "non-str"],
)
def test_vocab_from_dict_rejects_bad_data(bad, message):
    with pytest.raises(ValueError, match=message):
        Vocab.from_dict(bad)


def test_vocab_constructor_validates():
    with pytest.raises(ValueError, match="specials"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError, match="twice"):
        Vocab(["<pad>", "<s>", "</s>", "<unk>", "x", "x"])
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build([["a"]], min_freq=0)


# --------------------------------------------------------------------------------- tokenisation


@pytest.mark.parametrize("text", ["tuesday 3 march 1998", "  two  spaces ", "é\tü", ""])
def test_char_tokenize_round_trip(text):
    tokens = tokenize(text, "char")
    assert tokens == list(text)
    assert detokenize(tokens, "char") == text


def test_word_tokenize_round_trip():
    assert tokenize("  the cat\tsat \n", "word") == ["the", "cat", "sat"]
    assert detokenize(tokenize("the cat sat", "word"), "word") == "the cat sat"


def test_tokenize_rejects_unknown_mode():
    with pytest.raises(ValueError, match="char"):
        tokenize("x", "bpe")
    with pytest.raises(ValueError, match="word"):
        detokenize(["x"], "bpe")


# ---------------------------------------------------------------------------------------- dates

_ORDINAL = re.compile(r"(\d+)(st|nd|rd|th)\b", re.IGNORECASE)

# strptime formats for the patterns (after ordinal suffixes, "the" and "of" are removed).
_STRPTIME = {
    "{dd}/{mm}/{yy}": "%d/%m/%y",
    "{yyyy}.{mm}.{dd}": "%Y.%m.%d",
    "{dd}/{mm}/{yyyy}": "%d/%m/%Y",
    "{d}.{m}.{yyyy}": "%d.%m.%Y",
    "{yyyy}/{mm}/{dd}": "%Y/%m/%d",
    "{yyyy}{mm}{dd}": "%Y%m%d",
    "{dd}-{mon}-{yy}": "%d-%b-%y",
    "{dow} {d} {month} {yyyy}": "%A %d %B %Y",
    "{month} {do}, {yyyy}": "%B %d, %Y",
    "{d} {mon} {yyyy}": "%d %b %Y",
    "{dw}, {d} {month} {yyyy}": "%a, %d %B %Y",
    "{month} {d} {yyyy}": "%B %d %Y",
    "{do} of {month} {yyyy}": "%d %B %Y",
    "{dow}, {month} {d}, {yyyy}": "%A, %B %d, %Y",
    "{mon} {d}, {yyyy}": "%b %d, %Y",
    "{d} {month} {yy}": "%d %B %y",
    "{dw} {dd} {mon} {yyyy}": "%a %d %b %Y",
    "{dow} the {do} of {month} {yyyy}": "%A %d %B %Y",
    "{d} {month}, {yyyy}": "%d %B, %Y",
}


def _parse_human(text: str, pattern: str) -> datetime.date:
    """Parse a generated date independently of the generator (English names, as in C locale)."""
    cleaned = _ORDINAL.sub(r"\1", text)
    cleaned = re.sub(r"\s+(the|of)\s+", " ", cleaned, flags=re.IGNORECASE)
    parsed = datetime.datetime.strptime(cleaned, _STRPTIME[pattern]).date()
    # strptime maps %y 00-68 to 2000-2068; the generator's window is 1950-2049.
    if "%y" in _STRPTIME[pattern] and parsed.year >= 2050:
        parsed = parsed.replace(year=parsed.year - 100)
    return parsed


def test_every_pattern_has_a_parser():
    assert set(_STRPTIME) == set(DATE_PATTERNS)


def test_iso_targets_parse_and_lie_in_range():
    rng = random.Random(1)
    for _ in range(500):
        _, iso = random_date_pair(rng)
        date = datetime.date.fromisoformat(iso)
        assert date.isoformat() == iso
        assert datetime.date(1950, 1, 1) <= date <= datetime.date(2049, 12, 31)


@pytest.mark.parametrize("pattern", DATE_PATTERNS)
def test_human_date_denotes_the_iso_date(pattern):
    rng = random.Random(2)
    for case in ("title", "lower", "upper"):
        for _ in range(20):
            date = datetime.date.fromordinal(
                rng.randint(
                    datetime.date(1950, 1, 1).toordinal(), datetime.date(2049, 12, 31).toordinal()
                )
            )
            text = format_date(date, pattern, case)
            assert _parse_human(text, pattern) == date, (text, date)


def test_weekday_names_agree_with_the_date():
    rng = random.Random(3)
    checked = 0
    for _ in range(500):
        human, iso = random_date_pair(rng)
        weekday = WEEKDAYS[datetime.date.fromisoformat(iso).weekday()].lower()
        words = re.findall(r"[a-z]+", human.lower())
        named = [w for w in words if any(w == d.lower() or w == d[:3].lower() for d in WEEKDAYS)]
        for word in named:
            assert weekday.startswith(word), (human, iso)
            checked += 1
    assert checked > 50


def test_random_date_pairs_parse_back():
    rng = random.Random(4)
    for _ in range(300):
        human, iso = random_date_pair(rng)
        # Find which pattern(s) the string fits and check one parses to the ISO date.
        parsed = set()
        for pattern in DATE_PATTERNS:
            with contextlib.suppress(ValueError):
                parsed.add(_parse_human(human, pattern))
        assert datetime.date.fromisoformat(iso) in parsed, (human, iso)


def test_known_examples():
    date = datetime.date(1998, 3, 3)
    assert format_date(date, "{dow} {d} {month} {yyyy}", "lower") == "tuesday 3 march 1998"
    assert format_date(date, "{dd}/{mm}/{yy}") == "03/03/98"
    assert format_date(date, "{month} {do}, {yyyy}") == "March 3rd, 1998"
    assert format_date(date, "{d} {mon} {yyyy}") == "3 Mar 1998"
    assert format_date(date, "{yyyy}.{mm}.{dd}") == "1998.03.03"
    assert format_date(date, "{dw}, {d} {month} {yyyy}") == "Tue, 3 March 1998"
    assert format_date(date, "{do} of {month} {yyyy}", "upper") == "3RD OF MARCH 1998"
    assert format_date(datetime.date(2011, 11, 12), "{do}") == "12th"
    assert format_date(datetime.date(2011, 11, 22), "{do}") == "22nd"
    with pytest.raises(ValueError, match="pattern"):
        format_date(date, "{nope}")


def test_many_formats_and_cases_appear():
    rng = random.Random(5)
    shapes, cases = set(), set()
    for _ in range(500):
        human, _ = random_date_pair(rng)
        # Shape independent of the generator: letter runs -> a, digit runs -> 9.
        shapes.add(re.sub(r"\d+", "9", re.sub(r"[a-zA-Z]+", "a", human)))
        letters = re.sub(r"[^a-zA-Z]", "", human)
        if letters:
            cases.add("upper" if letters.isupper() else "lower" if letters.islower() else "mixed")
    assert len(shapes) >= 8, shapes
    assert cases == {"upper", "lower", "mixed"}


def test_dates_are_deterministic_given_the_rng():
    a = [random_date_pair(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng1, rng2 = random.Random(8), random.Random(8)
    assert [random_date_pair(rng1) for _ in range(50)] == [
        random_date_pair(rng2) for _ in range(50)
    ]
    assert generate_pairs("dates", 50, seed=1) != generate_pairs("dates", 50, seed=2)


# ---------------------------------------------------------------------------------------- tasks


def _indices(text: str) -> list[int]:
    return [int(token[1:]) for token in text.split()]


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_symbol_tasks(task):
    pairs = generate_pairs(task, 200, seed=3, min_len=2, max_len=9, vocab_size=12)
    assert len(pairs) == 200
    lengths = set()
    for source, target in pairs:
        src, tgt = _indices(source), _indices(target)
        lengths.add(len(src))
        assert all(0 <= i < 12 for i in src)
        expected = {"copy": src, "reverse": src[::-1], "sort": sorted(src)}[task]
        assert tgt == expected
    assert lengths == set(range(2, 10))
    assert generate_pairs(task, 200, seed=3, min_len=2, max_len=9, vocab_size=12) == pairs
    assert generate_pairs(task, 200, seed=4, min_len=2, max_len=9, vocab_size=12) != pairs


def test_sort_uses_symbol_index_not_string_order():
    pairs = generate_pairs("sort", 100, seed=0, min_len=5, max_len=5, vocab_size=50)
    assert any(_indices(t) != sorted(_indices(t), key=str) for _, t in pairs)
    for _, target in pairs:
        assert _indices(target) == sorted(_indices(target))


def test_dates_task_and_tokenization():
    pairs = generate_pairs("dates", 20, seed=0)
    assert all(datetime.date.fromisoformat(iso) for _, iso in pairs)
    assert task_tokenization("dates") == "char"
    assert {task_tokenization(t) for t in ("copy", "reverse", "sort")} == {"word"}
    assert set(TASKS) == {"copy", "reverse", "sort", "dates", "numbers"}


@pytest.mark.parametrize(
    "n,words",
    [
        (0, "zero"),
        (5, "five"),
        (19, "nineteen"),
        (20, "twenty"),
        (99, "ninety-nine"),
        (105, "one hundred five"),
        (1000, "one thousand"),
        (100_010, "one hundred thousand ten"),
        (399_417, "three hundred ninety-nine thousand four hundred seventeen"),
        (999_999, "nine hundred ninety-nine thousand nine hundred ninety-nine"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_numbers_task_has_long_character_targets():
    pairs = generate_pairs("numbers", 500, seed=0)
    assert task_tokenization("numbers") == "char"
    assert generate_pairs("numbers", 500, seed=0) == pairs
    for digits, words in pairs:
        assert 30 <= len(words) <= 60
        assert number_to_words(int(digits)) == words
    assert len({d for d, _ in pairs}) > 490
    with pytest.raises(ValueError, match="n must be"):
        number_to_words(1_000_000)


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="reverse"):
        generate_pairs("translate", 3)
    with pytest.raises(ValueError, match="dates"):
        task_tokenization("translate")
    with pytest.raises(ValueError, match="min_len"):
        generate_pairs("copy", 3, min_len=5, max_len=2)


# ------------------------------------------------------------------------------------------ tsv


def _write(tmp_path, content: bytes, name: str = "pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_read_tsv_good_file(tmp_path):
    path = _write(
        tmp_path,
        "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\n"
        "\n"
        "Hi.\tSalut !\n"
        "   \n"
        "Héllo wörld\tBonjour\n".encode(),
    )
    assert read_tsv(path) == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Héllo wörld", "Bonjour")]
    assert read_tsv(str(path)) == read_tsv(path)


def test_read_tsv_crlf_and_bom(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbfa b\tc d\r\ne\tf\r\n\r\n")
    assert read_tsv(path) == [("a b", "c d"), ("e", "f")]


def test_read_tsv_no_final_newline(tmp_path):
    assert read_tsv(_write(tmp_path, b"a\tb\nc\td")) == [("a", "b"), ("c", "d")]


def test_read_tsv_missing_tab(tmp_path):
    path = _write(tmp_path, b"a\tb\n\nno tab here\n", name="corpus.tsv")
    with pytest.raises(CorpusFormatError) as info:
        read_tsv(path)
    message = str(info.value)
    assert "corpus.tsv" in message
    assert ":3:" in message
    assert "tab" in message
    assert info.value.line == 3
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "content, line, what",
    [
        (b"a\tb\nsource\t\n", 2, "empty target"),
        (b"\tb\n", 1, "empty source"),
        (b"\t\n", 1, "empty source"),
    ],
    ids=["empty-target", "empty-source", "only-tab"],
)
def test_read_tsv_empty_side(tmp_path, content, line, what):
    with pytest.raises(CorpusFormatError, match=rf"pairs\.tsv:{line}: {what}"):
        read_tsv(_write(tmp_path, content))


def test_read_tsv_bad_utf8_names_the_line(tmp_path):
    path = _write(tmp_path, b"a\tb\nc\td\ne\t\xff\xfe\n")
    with pytest.raises(CorpusFormatError, match=r"pairs\.tsv:3: .*utf-8"):
        read_tsv(path)
    # The same bytes are fine in Latin-1.
    assert read_tsv(path, encoding="latin-1")[2] == ("e", "ÿþ")


def test_read_tsv_missing_file(tmp_path):
    path = tmp_path / "nope.tsv"
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_tsv(path)


# -------------------------------------------------------------------------------- preparation


def test_tokenize_filter_build_encode():
    pairs = tokenize_pairs([("a b c", "x y"), ("a", "x y z w"), ("b b", "y")], "word")
    assert pairs[0] == (["a", "b", "c"], ["x", "y"])
    assert filter_by_length(pairs, 2, None) == pairs[1:]
    assert filter_by_length(pairs, None, 2) == [pairs[0], pairs[2]]
    assert filter_by_length(pairs + [([], ["x"]), (["a"], [])], None, None) == pairs
    src_vocab, tgt_vocab = build_vocabs(pairs)
    assert src_vocab.tokens[4:] == ["b", "a", "c"]
    assert tgt_vocab.tokens[4:] == ["y", "x", "w", "z"]
    shared_src, shared_tgt = build_vocabs(pairs, shared=True)
    assert shared_src is shared_tgt
    assert {"a", "b", "c", "x", "y", "z", "w"} <= set(shared_src.tokens)
    encoded = encode_pairs(pairs, src_vocab, tgt_vocab)
    assert encoded[0] == (src_vocab.encode(["a", "b", "c"]), tgt_vocab.encode(["x", "y"]))
    assert src_vocab.bos_id not in encoded[0][0] and tgt_vocab.eos_id not in encoded[0][1]
    assert build_vocabs(pairs, min_freq=2)[0].tokens[4:] == ["b", "a"]


def test_tokenize_pairs_per_side():
    pairs = [("paste", "P EY1 S T")]
    assert tokenize_pairs(pairs, "char", "word") == [(list("paste"), ["P", "EY1", "S", "T"])]
    assert tokenize_pairs(pairs, "word", "char") == [(["paste"], list("P EY1 S T"))]
    assert tokenize_pairs(pairs, "char") == [(list("paste"), list("P EY1 S T"))]  # both sides
    with pytest.raises(ValueError, match="tokenization mode must be one of"):
        tokenize_pairs(pairs, "char", "phoneme")


# ------------------------------------------------------------------------------------- batching


def _examples(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [
        (
            [rng.randint(4, 20) for _ in range(rng.randint(1, 12))],
            [rng.randint(4, 20) for _ in range(rng.randint(1, 9))],
        )
        for _ in range(n)
    ]


def test_batch_padding_bos_eos_and_lengths():
    examples = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13, 14])]
    (batch,) = make_batches(examples, 2, bucket=False)
    assert isinstance(batch, Batch)
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.int64
    assert batch.src.tolist() == [[5, 6, 7], [10, 0, 0]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[1, 8, 9, 0, 0], [1, 11, 12, 13, 14]]
    assert batch.tgt_out.tolist() == [[8, 9, 2, 0, 0], [11, 12, 13, 14, 2]]
    assert batch.tgt_lengths.tolist() == [3, 5]
    assert batch.tgt_lengths.dtype == batch.src_lengths.dtype == torch.int64
    assert batch.indices == [0, 1]


def test_batch_custom_special_ids():
    (batch,) = make_batches([([5], [6])], 4, pad_id=9, bos_id=7, eos_id=8)
    assert batch.tgt_in.tolist() == [[7, 6]] and batch.tgt_out.tolist() == [[6, 8]]
    (batch,) = make_batches([([5], [6]), ([5, 5], [6, 6])], 4, pad_id=9, bos_id=7, eos_id=8)
    assert batch.src.tolist() == [[5, 9], [5, 5]]


def test_batch_with_empty_targets_for_inference():
    (batch,) = make_batches([([5, 6], []), ([7], [])], 8)
    assert batch.tgt_in.tolist() == [[1], [1]]
    assert batch.tgt_out.tolist() == [[2], [2]]
    assert batch.tgt_lengths.tolist() == [1, 1]


def test_batch_contents_match_examples_and_indices_restore_order():
    examples = _examples(103)
    batches = make_batches(examples, 8, shuffle=True, seed=3)
    assert [len(b) for b in batches].count(8) == 12 and sum(len(b) for b in batches) == 103
    restored: list = [None] * len(examples)
    for batch in batches:
        for row, index in enumerate(batch.indices):
            src_len, tgt_len = int(batch.src_lengths[row]), int(batch.tgt_lengths[row]) - 1
            src = batch.src[row, :src_len].tolist()
            tgt = batch.tgt_out[row, :tgt_len].tolist()
            assert batch.tgt_in[row, 1 : tgt_len + 1].tolist() == tgt
            assert (batch.src[row, src_len:] == 0).all() and (
                batch.tgt_out[row, tgt_len + 1 :] == 0
            ).all()
            assert restored[index] is None
            restored[index] = (src, tgt)
    assert restored == examples


def test_bucketing_groups_similar_lengths():
    examples = _examples(400)

    def spread(batches):
        return sum(int(b.src_lengths.max() - b.src_lengths.min()) for b in batches) / len(batches)

    bucketed = make_batches(examples, 16, shuffle=True, seed=0)
    plain = make_batches(examples, 16, bucket=False)
    assert spread(bucketed) <= 1.0
    assert spread(plain) > 5.0
    # Shuffled batch order: the batches are not sorted by length any more.
    firsts = [int(b.src_lengths.min()) for b in bucketed]
    assert firsts != sorted(firsts)
    # Without shuffle, bucketed batches come in length order.
    ordered = [int(b.src_lengths.min()) for b in make_batches(examples, 16)]
    assert ordered == sorted(ordered)
    assert [b.indices for b in plain][0] == list(range(16))


def test_shuffle_is_deterministic_given_the_seed():
    examples = _examples(200)
    a = make_batches(examples, 10, shuffle=True, seed=5)
    b = make_batches(examples, 10, shuffle=True, seed=5)
    c = make_batches(examples, 10, shuffle=True, seed=6)
    assert [x.indices for x in a] == [x.indices for x in b]
    assert all(
        torch.equal(x.src, y.src) and torch.equal(x.tgt_in, y.tgt_in)
        for x, y in zip(a, b, strict=True)
    )
    assert [x.indices for x in a] != [x.indices for x in c]
    unbucketed = make_batches(examples, 10, shuffle=True, seed=5, bucket=False)
    assert sorted(i for x in unbucketed for i in x.indices) == list(range(200))
    assert [i for x in unbucketed for i in x.indices] != list(range(200))


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_take_batches_of_similar_lengths_at_each_step(replicas):
    """With replicas, the batches of one step (each run of `replicas` in the list, which
    distributed.shard deals out) are neighbours in length order; the runs are shuffled and the
    batches that make no whole run come last, picked at random."""
    examples = _examples(1000)
    single = make_batches(examples, 8, shuffle=True, seed=4)
    batches = make_batches(examples, 8, shuffle=True, seed=4, replicas=replicas)
    assert sorted(b.indices for b in batches) == sorted(b.indices for b in single)
    whole = len(batches) - len(batches) % replicas
    assert len(batches) % replicas  # 125 batches: a part-run is left over at either count

    def length(batch):
        return (int(batch.src_lengths.max()), int(batch.tgt_lengths.max()))

    runs = [batches[i : i + replicas] for i in range(0, whole, replicas)]
    assert all(max(length(b)[0] for b in r) - min(length(b)[0] for b in r) <= 1 for r in runs)
    firsts = [length(r[0]) for r in runs]
    assert firsts != sorted(firsts)
    spares = {tuple(b.indices) for b in batches[whole:]}
    other_seed = make_batches(examples, 8, shuffle=True, seed=5, replicas=replicas)
    assert spares != {tuple(b.indices) for b in other_seed[whole:]}
    again = make_batches(examples, 8, shuffle=True, seed=4, replicas=replicas)
    assert [b.indices for b in again] == [b.indices for b in batches]
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        make_batches(examples, 8, replicas=0)


def test_batch_to_device_and_bad_batch_size():
    (batch,) = make_batches([([5], [6])], 2)
    moved = batch.to("cpu")
    assert torch.equal(moved.src, batch.src) and moved.indices == batch.indices
    with pytest.raises(ValueError, match="batch_size"):
        make_batches([([5], [6])], 0)
    assert make_batches([], 4) == []


# ---------------------------------------------------------------------------------------- split


def test_split_is_deterministic_and_disjoint():
    examples = list(range(1000))
    train, valid = split(examples, 0.1, seed=0)
    assert len(valid) == 100 and len(train) == 900
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(examples)
    assert split(examples, 0.1, seed=0) == (train, valid)
    assert split(examples, 0.1, seed=1)[1] != valid
    assert valid != list(range(900, 1000)) and valid == sorted(valid)
    assert split(examples, 0.0, seed=0) == (examples, [])
    with pytest.raises(ValueError, match="valid_fraction"):
        split(examples, 1.5, seed=0)


@pytest.mark.parametrize("enabled", [True, False])
def test_preparing_data_pauses_the_cycle_collector_and_restores_it(monkeypatch, enabled):
    """prepare_data runs without Python's cycle collector (it would walk every new pair again at
    each pass) and leaves it as it found it, also when preparing fails."""
    import gc

    from fast_s2s.training import data as training_data

    seen = []

    def prepare(settings, vocabs):
        seen.append(gc.isenabled())
        raise ValueError("bad data")

    monkeypatch.setattr(training_data, "_prepare", prepare)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with pytest.raises(ValueError, match="bad data"):
            training_data.prepare_data(training_data.TrainSettings())
        assert seen == [False]
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()
