"""Property tests of the reply parser: whatever the bytes, a typed value or a RequestFailed.

hypothesis feeds arbitrary JSON values (with keys and key fragments mixed into the
strings, and shaped like chat replies half the time) and arbitrary bytes to every parser
of `batchrun._reply`; nothing else may come out, and no 16-character run of a key may
survive in anything returned or in any failure's message.
"""

from __future__ import annotations

import base64
import html
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchrun import _escapes, _narrowing, _scrub
from batchrun._account_reply import data_of, parse_created_key, parse_key_data, parse_models
from batchrun._exceptions import RequestFailed
from batchrun._reply import ChatResult, Reply, error_failure, parse_chat
from batchrun._scrub import Scrubber

from .conftest import FAKE_KEY

MGMT = "sk-or-v1-" + "fedcba9876543210" * 4
SCRUB = Scrubber(FAKE_KEY, MGMT)
GRAMS = [s[i : i + 16] for s in (FAKE_KEY, MGMT) for i in range(len(s) - 15)]

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from([FAKE_KEY, MGMT, FAKE_KEY[3:40], MGMT[20:60], "stop", "text", "error", ""]),
    st.builds(lambda a, b: a + FAKE_KEY[10:50] + b, st.text(max_size=5), st.text(max_size=5)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=5),
    max_leaves=30,
)
# Replies that look like chat answers, so the parser's deeper paths are reached too. A field's
# value is any JSON value of up to 8 leaves: enough for every wrong type and nesting the parser
# tells apart (lists of parts, objects in place of strings), at a fraction of the generation
# cost of 30-leaf values in each of a reply's ~16 fields.
fields = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=5),
    max_leaves=8,
)
messages = st.fixed_dictionaries(
    {"content": fields},
    optional={"refusal": fields, "reasoning": fields, "role": fields, "tool_calls": fields},
)
choices = st.fixed_dictionaries(
    {"message": messages | fields},
    optional={"finish_reason": fields, "native_finish_reason": fields, "error": fields},
)
usages = st.fixed_dictionaries(
    {},
    optional={
        name: fields
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "cost_details", "is_byok")
    },
)
# Router metadata naming the provider that answered (router-metadata.mdx), where a key may hide.
metadata = st.fixed_dictionaries(
    {},
    optional={
        "endpoints": st.fixed_dictionaries(
            {"available": st.lists(st.fixed_dictionaries({"selected": st.just(True), "provider": texts}), max_size=2)}
        ),
        "attempts": st.lists(st.fixed_dictionaries({"status": st.just(200), "provider": texts}), max_size=2),
    },
)
chat_like = st.fixed_dictionaries(
    {"choices": st.lists(choices | fields, max_size=2)},
    optional={
        "id": fields,
        "model": fields,
        "provider": fields,
        "usage": usages | fields,
        "openrouter_metadata": metadata | fields,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    chat_like.map(orjson.dumps),
    chat_like.map(lambda v: orjson.dumps(v)[:-3]),  # cut short
    # The key written with JSON escapes: no plain anchor of it is in the body.
    chat_like.map(lambda v: orjson.dumps(v).replace(b"-", b"\\u002d").replace(b"a", b"\\u0061")),
)
statuses = st.sampled_from([200, 200, 200, 201, 400, 401, 402, 403, 404, 429, 500, 503])


def clean(value: Any) -> None:
    """No key fragment anywhere in a returned value."""
    if isinstance(value, str):
        assert not any(gram in value for gram in GRAMS), value
    elif isinstance(value, dict):
        for k, v in value.items():
            clean(k)
            clean(v)
    elif isinstance(value, (list, tuple)):
        for item in value:
            clean(item)


def reply(status: int, body: bytes) -> Reply:
    return Reply(status, {}, body)


@settings(max_examples=400, deadline=None)
@given(statuses, bodies)
def test_chat_replies_become_a_result_or_a_classified_failure(status: int, body: bytes) -> None:
    try:
        result = parse_chat(reply(status, body), SCRUB, 0.0)
    except RequestFailed as failure:
        assert isinstance(failure.kind, str) and failure.kind
        clean(failure.message)
        return
    assert isinstance(result, ChatResult) and isinstance(result.content, str)
    for text in (result.generation_id, result.model, result.provider, result.finish_reason, result.refusal):
        assert text is None or isinstance(text, str)
    assert result.cost is None or (math.isfinite(result.cost) and result.cost >= 0)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = result.usage.get(name)
        assert value is None or (type(value) is int and value >= 0)
    clean([result.generation_id, result.model, result.provider, result.content, result.usage])
    clean([result.native_finish_reason, result.reasoning, result.refusal, result.finish_reason])


@settings(max_examples=300, deadline=None)
@given(statuses, bodies)
def test_account_replies_become_typed_values_or_failures(status: int, body: bytes) -> None:
    for parse in (
        lambda r: parse_models(r, SCRUB),
        lambda r: parse_key_data(data_of(r, "/key"), SCRUB, "/key"),
        lambda r: parse_created_key(r, SCRUB),
        lambda r: error_failure(r, SCRUB, 0.0).message,
    ):
        try:
            value = parse(reply(status, body))
        except RequestFailed as failure:
            clean(failure.message)
            continue
        clean(value if not hasattr(value, "__dict__") else vars(value))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_model_lists_hold_only_known_or_unknown_prices(items: Any) -> None:
    body = orjson.dumps({"data": items if isinstance(items, list) else [items]})
    try:
        models = parse_models(reply(200, body), SCRUB)
    except RequestFailed:
        return
    for info in models.values():
        for price in (info.prompt_price, info.completion_price, info.request_price):
            assert price is None or (isinstance(price, float) and math.isfinite(price) and price >= 0)


@given(st.text(max_size=30), st.integers(min_value=16, max_value=len(FAKE_KEY)), st.data())
def test_no_fragment_of_sixteen_survives_scrubbing(prefix: str, length: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(FAKE_KEY) - length))
    text = prefix + FAKE_KEY[start : start + length] + prefix
    clean(SCRUB.text(text))


@given(st.text(max_size=30), st.integers(min_value=16, max_value=len(FAKE_KEY)), st.data())
def test_no_fragment_survives_in_upper_or_lower_case(prefix: str, length: int, data: st.DataObject) -> None:
    # break-14b m3: an echo that changed the key's case ("SK-OR-V1-AB12...") was kept as is.
    start = data.draw(st.integers(min_value=0, max_value=len(FAKE_KEY) - length))
    fragment = FAKE_KEY[start : start + length]
    for echoed in (fragment.upper(), fragment.lower()):
        masked = SCRUB.text(prefix + echoed + prefix)
        assert not any(echoed[i : i + 16] in masked for i in range(len(echoed) - 15)), masked


def test_a_body_that_cannot_hold_a_key_is_read_without_scrubbing_and_one_that_can_is_scrubbed() -> None:
    # Scrubber.for_body: the fast path must never skip a body a key could come out of.
    plain = orjson.dumps({"choices": [{"message": {"content": "hello"}}]})
    assert SCRUB.for_body(plain) is not SCRUB
    assert SCRUB.for_body(plain).text(FAKE_KEY) == FAKE_KEY  # it masks nothing: only for clean bodies
    for body in (
        orjson.dumps({"x": FAKE_KEY}),
        orjson.dumps({"x": FAKE_KEY[20:40]}),  # a fragment
        orjson.dumps({"x": FAKE_KEY.upper()}),
        orjson.dumps({"x": MGMT[30:50]}),
        b'{"x": "caf\\u00e9"}',  # any escape: its decoded text may spell a key
    ):
        assert SCRUB.for_body(body) is SCRUB, body


def test_a_key_whose_base64_holds_slashes_written_as_json_escapes_is_scrubbed() -> None:
    # JSON may write `/` as `\\/`: a base64 form of a key with a `/` in every block reached
    # the records, no anchor being whole in the body's bytes.
    secret = "?" * 40  # base64 "Pz8/Pz8/...": a slash every four characters
    scrub = Scrubber(secret)
    form = base64.b64encode(secret.encode()).decode()
    body = orjson.dumps({"x": form}).replace(b"/", b"\\/")
    assert scrub.for_body(body) is scrub
    assert form[:16] not in scrub.value(orjson.loads(body))["x"]


def test_a_secret_read_from_the_environment_with_bytes_not_utf8_is_masked_without_a_crash() -> None:
    # A key variable holding bytes that are not UTF-8 (os.environ keeps them as surrogates)
    # crashed every command: the bytes search was built with strict UTF-8.
    raw = b"abcdefgh\xffijklmnopqrstuvwxyz"
    scrub = Scrubber(raw.decode("utf-8", "surrogateescape"))
    body = b'{"x": "' + raw + b'"}'
    assert scrub.for_body(body) is scrub
    assert "ijklmnopqrstuvwx" not in scrub.text(body.decode("utf-8", "replace"))  # as an error body is read


ESCAPE_PIECES = ["%41", "%4a", "%u0041", "\\u0073", "\\\\u0073", "&#65;", "&#65", "&#x41;", "&#x0041", "&amp;"]
ESCAPE_PIECES += ["&sol;", "%2573", "&#37;41", "%22", "\\u0022", "x", "é", "%%", "&#", "%4", "%41" * 20, "\\u0041" * 17]
ESCAPE_PIECES += ["%5Cu0041", "&#92;u0041", "&#x5c;u0041", "&bsol;u0041", "%5C", "&#92;", "%EF%BD%93", "\\uff53"]
ESCAPE_PIECES += ["%C3%A9", "%c3%a9" * 9, "%E2%82%AC", "%C0%80", "&lt;", "&#233;", "\\u00e9" * 17, "%ED%A0%80"]


@given(st.lists(st.sampled_from(ESCAPE_PIECES), max_size=14))
def test_escapes_read_by_split_read_as_the_pattern_reads_them_one_by_one(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert _escapes._read_escapes(text) == _escapes._ESCAPED.sub(_escapes._unescape_key_chars, text)


def test_a_hostile_text_of_short_escapes_is_read_by_lookup_not_a_call_an_escape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # out-178 F5, out-179 F2: `%41x%41x...` (runs too short to be read at once) cost a Python call
    # an escape, ~0.9 s of the event loop per 4 MB reading, twice a row.
    calls: list[str] = []
    read_one = _escapes._unescape_key_chars

    def counted(match: re.Match[str]) -> str:
        calls.append(match[0])
        return read_one(match)

    monkeypatch.setattr(_escapes, "_unescape_key_chars", counted)
    _escapes._reading.cache_clear()
    text = "%41x&#66;y" * 50_000
    assert _escapes._read_escapes(text) == "AxBy" * 50_000
    assert sorted(calls) == ["%41", "&#66;"]  # each distinct escape read once


NOT_ASCII_SECRET = (
    "clé-été-Ωμέγα-" + "0123456789abcdef" * 2 + "\udcff-end"
)  # a lone surrogate, as os.environ keeps a byte


@given(
    st.lists(
        st.one_of(
            st.text(alphabet="aé Ω\u4e2d\U0001f600-_0123456789", max_size=6),
            st.builds(
                lambda start, size: NOT_ASCII_SECRET[start : start + size],
                st.integers(0, len(NOT_ASCII_SECRET) - 1),
                st.integers(16, len(NOT_ASCII_SECRET)),
            ),
        ),
        max_size=6,
    )
)
@example(["é" * 3, NOT_ASCII_SECRET[2:30], "\U0001f600", NOT_ASCII_SECRET[10:40]])
def test_the_grams_of_a_key_that_is_not_ascii_are_found_where_they_stand(pieces: list[str]) -> None:
    # The search reads bytes (_scrub._utf8): a text that is not ASCII has its matches' byte
    # offsets made character offsets. Against every 16-character window read one by one.
    text = "".join(pieces)
    _, grams, _ = _scrub._prepared(NOT_ASCII_SECRET)
    lowered = _scrub._ascii_lower(text)
    expected = [(i, i + 16) for i in range(len(lowered) - 15) if lowered[i : i + 16] in grams]
    assert _scrub._Search.of(grams, frozenset(grams)).fragments(text) == expected
    masked = Scrubber(NOT_ASCII_SECRET).text(text)
    assert not any(NOT_ASCII_SECRET[i : i + 16] in masked for i in range(len(NOT_ASCII_SECRET) - 15)), masked


@pytest.mark.parametrize(
    "escape",
    [
        lambda c: f"%{ord(c):02X}",
        lambda c: f"&#{ord(c)};",
        lambda c: f"&#x{ord(c):x};",
        lambda c: f"\\u{ord(c):04x}",
        lambda c: f"%u{ord(c):04X}",
        lambda c: {"/": "&sol;", "+": "&plus;", "!": "&excl;"}[c],
    ],
    ids=["percent", "html", "html-hex", "json", "percent-u", "html-named"],
)
def test_a_secret_with_punctuation_escaped_where_it_stands_is_scrubbed(escape: Callable[[str], str]) -> None:
    # out-178 F3: a password or token with `/`, `+` or `!` in every 16 characters passed with
    # those escaped: only escapes of a key's own characters were read.
    secret = "Tr0ub4dor&3/x+yzAB!"
    written = "".join(escape(c) if c in "/+!" else c for c in secret)
    scrub = Scrubber(secret)
    body = orjson.dumps({"x": f"it is {written} here"})
    assert scrub.for_body(body) is scrub
    assert "[key]" in scrub.value(orjson.loads(body))["x"], written
    # A quote or a backslash written so is left as it is: read, it would change a JSON text.
    assert scrub.line(b'{"x": "\\u0022\\u005c"}') == b'{"x": "\\u0022\\u005c"}'


NOT_ASCII_PASSWORD = "pässwörd-<Ωμέγα>-0123456789"


@pytest.mark.parametrize(
    "written",
    [
        "".join(f"&#{ord(c)};" for c in NOT_ASCII_PASSWORD),
        "".join(f"&#x{ord(c):X}" for c in NOT_ASCII_PASSWORD),
        "".join(f"\\u{ord(c):04x}" for c in NOT_ASCII_PASSWORD),
        "".join(f"%u{ord(c):04X}" for c in NOT_ASCII_PASSWORD),
        urllib.parse.quote(NOT_ASCII_PASSWORD, safe=""),
        urllib.parse.quote(urllib.parse.quote(NOT_ASCII_PASSWORD, safe=""), safe=""),
        html.escape(NOT_ASCII_PASSWORD),
        html.escape(html.escape(NOT_ASCII_PASSWORD)),
    ],
    ids=["html", "html-hex", "json", "percent-u", "percent-utf8", "percent-twice", "html-text", "html-text-twice"],
)
def test_a_secret_beyond_ascii_or_with_angle_brackets_escaped_is_scrubbed(written: str) -> None:
    # out-180 F6: only escapes of ASCII were read (`&#246;`, `%C3%B6` passed); F4: a secret
    # holding `<` reached the HTML report, JUnit and markdown as `&lt;`, which was not read.
    masked = Scrubber(NOT_ASCII_PASSWORD).text(f"it was {written} here")
    assert masked == "it was [key] here", masked


def test_a_servers_huge_error_message_or_key_label_is_cut_after_scrubbing() -> None:
    # out-178 F6: a 403 of /credits with a 3 MB message was one 3 MB line on stderr and in the
    # CI step summary; `plan` printed a 3 MB /key label.
    huge = "x" * 3_000_000 + FAKE_KEY
    body = orjson.dumps({"error": {"code": 403, "message": FAKE_KEY[:40] + huge}})
    failed = error_failure(Reply(403, {}, body), SCRUB, 0.0)
    assert len(failed.message) <= 2_000 and failed.message.startswith("[key]") and FAKE_KEY[:16] not in str(failed)
    key = parse_key_data({"label": huge, "limit": None, "usage": 0}, SCRUB, "key")
    assert len(key["label"]) <= 200


@given(st.lists(st.characters(max_codepoint=0x2FF), max_size=40), st.booleans(), st.booleans())
@example(chars=list('A"B\\C') * 4, json_style=False, upper=False)  # quotes and backslashes stay escaped
@example(chars=list('A"B\\C\x01é') * 3, json_style=True, upper=True)
@example(chars=list("%41") * 8, json_style=False, upper=True)  # escapes of escapes, read at the next level
def test_a_run_of_escapes_reads_as_its_escapes_one_by_one(chars: list[str], json_style: bool, upper: bool) -> None:
    # out-178 F5: runs of 16+ URL or JSON escapes are read at once (a 4 MB hostile body took a
    # second a reading, one call an escape): each as it reads alone, level after level.
    def escape(c: str) -> str:
        code = f"{ord(c):04x}" if json_style else f"{ord(c) % 256:02x}"
        return ("\\u" if json_style else "%") + (code.upper() if upper else code)

    text = "".join(map(escape, chars))
    one_by_one = re.compile(_escapes._ONE)
    expected = text
    for _ in range(3):  # and each level's reading seen: NFKC (out-182), invisibles as nothing (out-183)
        read = one_by_one.sub(_escapes._unescape_key_chars, expected)
        expected = _escapes.seen(read) if read != expected else read
    assert _escapes.unescaped(text) == expected


def test_an_encoded_key_is_masked_where_it_stands_and_the_honest_text_around_it_kept_as_written() -> None:
    # out-179 F1: a text whose escapes showed a key was kept whole in its decoded form, masked:
    # `c=%26` became `c=&` and full-width text ASCII, in answers that checks then graded.
    leak = "".join(f"%{b:02X}" for b in FAKE_KEY.encode())
    honest = 'Tom &amp; Jerry, 100%25 sure, ＡＢＣ１２３ ﬁ x², "https://ex.org/?q=a%20b&c=%26"'
    assert SCRUB.text(f"{honest} {leak} <{honest}>") == f"{honest} [key] <{honest}>"
    line = orjson.dumps({"note": honest, "leak": leak})
    assert orjson.loads(SCRUB.line(line)) == {"note": honest, "leak": "[key]"}
    # A record line stays JSON, with what follows the key: an escaped quote, a backslash.
    for after in ('"more', "\\", '\\"y'):
        line = orjson.dumps({"a": leak + after, "b": "after"})
        assert orjson.loads(SCRUB.line(line)) == {"a": "[key]" + after, "b": "after"}


def test_keep_alive_comments_before_a_plain_json_answer_are_passed_over() -> None:
    # break38 F7 (verify38): a non-streamed reply with ": OPENROUTER PROCESSING" (or ":x") lines
    # before its JSON was a bad_response, retried and paid twice. Only such lines, and blank
    # ones, are passed over: anything else before the JSON is still no reply.
    answer = {"id": "gen-1", "choices": [{"message": {"content": "Paris"}, "finish_reason": "stop"}], "usage": {}}
    body = orjson.dumps(answer)
    for before in (b": OPENROUTER PROCESSING\n\n", b":x\n", b":a\r\n: b\n\n  "):
        result = parse_chat(Reply(200, {}, before + body), Scrubber(), 0.0)
        assert result.content == "Paris"
    with pytest.raises(RequestFailed) as failed:
        parse_chat(Reply(200, {}, b"x: y\n" + body), Scrubber(), 0.0)
    assert failed.value.kind == "bad_response"


WORD_PIECES = [
    "\x00",
    "\x1c",
    "\u200b",
    "\x7f",
    " ",
    "\u3000",
    '"',
    "'",
    "<",
    ">",
    "\\",
    "%",
    "&",
    "é",
    "x",
    "ab",
    "%41",
    "&#65;",
    "\\u0041",
    "\n",
]
WORD_PIECES += [FAKE_KEY[:30], FAKE_KEY[30:], "".join(f"%{b:02x}" for b in FAKE_KEY[5:40].encode()), "&amp;"]


@given(st.lists(st.sampled_from(WORD_PIECES), max_size=16))
def test_words_are_masked_as_when_every_word_was_read(pieces: list[str]) -> None:
    # out-180 F2: only the words with an escape mark or a character beyond ASCII are read now;
    # the text comes out as when every word between the breaks was read one by one.
    text = "".join(pieces)
    parts = re.split(f"([{_escapes.SPACES}\"'<>]+)", text)  # the spaces a reader sees end words
    budget = [_narrowing.NARROWING_READS]  # and each such word narrowed to what shows a key (out-183 F7)
    for i in range(0, len(parts), 2):
        word = parts[i]
        if (plain := _escapes.unescaped(word)) != word and SCRUB._plain(plain) != plain:
            parts[i] = _narrowing.narrowed(word, "[key]" + word[len(word.rstrip("\\")) :], budget, SCRUB._plain)
    masked = "".join(parts)
    plain = _escapes.unescaped(masked)
    assert SCRUB._mask_words(text) == (masked if SCRUB._plain(plain) == plain else None)


def test_a_secret_across_words_is_masked_without_reading_a_pages_own_escapes() -> None:
    # A secret with a space, escaped in one of its words, shows only in the text read whole:
    # that reading (the fallback) made a page's `&lt;script&gt;` a `<script>`. Every word that
    # reads as anything but itself is masked instead, the rest of the page kept as written.
    scrub = Scrubber("correct horse battery staple")
    page = "<p>&lt;script&gt;alert(1)&lt;/script&gt; correct horse%20battery staple</p>"
    masked = scrub.text(page)
    assert "<script>" not in masked and "horse battery" not in _escapes.unescaped(masked), masked
    assert masked == "<p>&lt;script&gt;alert(1)&lt;/script&gt; [key]</p>"  # its words, however spaced (out-183 F6)


@pytest.mark.parametrize("escaped", ["\\u005c", "%5C", "&#92;", "&bsol;"])
def test_an_escaped_backslash_read_in_the_whole_text_stays_escaped(escaped: str) -> None:
    # out-182: an escaped backslash is read as a mark a JSON escape may start with, so that
    # `&#92;&#117;0073` reads as `s`; where the text read whole is what is kept (a secret across
    # words, shown by NFKC's reading of a full-width space), it must not become a raw backslash.
    # Since out-183 F6 a secret's words however spaced are masked where they stand: the rest of
    # the text is kept as it was written, escapes and all.
    scrub = Scrubber("correct horse battery staple")
    masked = scrub.text(f"a{escaped}b correct horse\u3000battery staple")
    assert masked == f"a{escaped}b [key]"
    line = scrub.line(orjson.dumps({"x": f"a{escaped}b correct horse\u3000battery staple"}))
    assert orjson.loads(line) == {"x": f"a{escaped}b [key]"}


@pytest.mark.parametrize("letter", ["\\u00fc", "&#252;", "%C3%BC", "%u00FC"])
def test_a_secret_holding_angle_brackets_with_one_letter_escaped_is_masked_whole(letter: str) -> None:
    # out-182 F5: split into words at its own `<` and `>`, only the word with the escape was
    # masked: `Tr0ub4dor<[key]>2024`, 13 of its 21 characters shown. What it holds ends no word.
    scrub = Scrubber("Tr0ub4dor<Zürich>2024")
    assert scrub.text(f"you sent Tr0ub4dor<Z{letter}rich>2024 (rejected)") == "you sent [key] (rejected)"
    # Another scrubber's words still end at angle brackets: a page's tags are kept.
    assert SCRUB.text(f"<p>{FAKE_KEY[:40].replace('a', '%61')}</p>") == "<p>[key]</p>"


def test_a_run_of_backslashes_is_tried_as_an_escape_from_its_start_only() -> None:
    # Tried at each of its characters, a text of 40,000 backslashes read as BACKSLASH (from
    # `\u005c` escapes) took 1.3 s a reading, quadratic in its length (out-182's forms).
    for mark in ("\\", _escapes.BACKSLASH):
        text = mark * 5 + "u0041"
        assert _escapes._ESCAPED.match(text, 0) is not None
        assert all(_escapes._ESCAPED.match(text, start) is None for start in range(1, 5))
    assert _escapes.unescaped("\\u005c" * 40_000) == _escapes.BACKSLASH * 40_000


QUOTED_PASSWORD = 'p@ss <w>ord "quoted" & 100% \\back ünïcødé'


@pytest.mark.parametrize(
    "written",
    [
        orjson.dumps(QUOTED_PASSWORD).decode()[1:-1],  # as JSON writes it: a grader's verdict, tool arguments
        orjson.dumps(QUOTED_PASSWORD).decode()[1:30],  # cut short
        orjson.dumps(QUOTED_PASSWORD).decode()[12:50],
        orjson.dumps(orjson.dumps(QUOTED_PASSWORD).decode()).decode()[1:-1],  # JSON in JSON
        urllib.parse.quote(QUOTED_PASSWORD, safe=""),
        html.escape(QUOTED_PASSWORD),
        "".join(f"\\u{ord(c):04x}" for c in QUOTED_PASSWORD),
        "".join(f"&#{ord(c)};" for c in QUOTED_PASSWORD),
    ],
    ids=["json", "json-cut", "json-middle", "json-twice", "percent", "html-text", "json-escapes", "html-references"],
)
def test_a_secret_holding_a_quote_or_a_backslash_is_scrubbed_as_json_and_escapes_write_it(written: str) -> None:
    # out-183 F5: a password with `"` or `\` came back from a grader's verdict (JSON: `\"`) whole
    # into the results, and URL- or HTML-escaped whole; the README excepted such secrets.
    scrub = Scrubber(QUOTED_PASSWORD)
    masked = scrub.text(f"it was {written} here")
    assert "[key]" in masked and "quoted" not in _escapes.unescaped(masked).replace("\\", ""), masked
    # A JSON line masked so is still JSON: no mask cuts an escape from its backslash.
    line = scrub.line(orjson.dumps({"reason": f"it was {written} here", "n": 1}))
    assert orjson.loads(line)["n"] == 1 and b"[key]" in line, line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://h/?k={percent}&z=2 ok", "see https://h/?k=[key]&z=2 ok"),
        ("<code>{html}</code>", "<code>[key]</code>"),
        ("日本語の答え{json}です。" * 2, "日本語の答え[key]です。" * 2),
        ("u={invisible}!", "u=[key]!"),
        ("a={json}&b={html}&c=3", "a=[key]&b=[key]&c=3"),
    ],
    ids=["url", "code", "cjk-twice", "invisible", "two-in-one-word"],
)
def test_only_the_part_of_a_word_that_shows_a_key_is_masked(text: str, expected: str) -> None:
    # out-183 F7: an escaped key in a word masked the whole word: a URL's other parameters, a
    # tag around it, a 64,000-character answer in a script without spaces became `[key]`.
    text = text.format(
        percent="".join(f"%{ord(c):02X}" for c in FAKE_KEY),
        html="".join(f"&#{ord(c)};" for c in FAKE_KEY),
        json="".join(f"\\u{ord(c):04x}" for c in FAKE_KEY),
        invisible="\u200b".join(FAKE_KEY),
    )
    assert SCRUB.text(text) == expected
    line = SCRUB.line(orjson.dumps({"x": text}))
    assert orjson.loads(line)["x"] == expected


def test_a_text_of_many_words_with_a_key_is_masked_word_by_word_past_the_narrowing_budget() -> None:
    # Narrowing reads a word a few dozen times: a hostile text of thousands of such words is
    # narrowed only within NARROWING_READS characters read, the rest masked word by word.
    word = "k=" + "".join(f"&#{ord(c)};" for c in FAKE_KEY) + "&z"
    masked = SCRUB.text(" ".join([word] * 2_000)).split(" ")
    assert masked[0] == "k=[key]&z" and masked[-1] == "[key]" and set(masked) == {"k=[key]&z", "[key]"}


@pytest.mark.parametrize("spacing", ["\n", "\t", "  ", "\r\n", "+", "&nbsp;", "&#160;", "\\u00a0", "%C2%A0", "<br>"])
def test_a_secret_with_spaces_echoed_otherwise_spaced_is_scrubbed(spacing: str) -> None:
    # out-183 F6: a token with spaces came back word-wrapped, with tabs, no-break spaces or `+`
    # between its words, whole.
    secret = "<b>fish & chips</b> 100% ünïcødé ok"
    scrub = Scrubber(secret)
    echoed = secret.replace(" ", spacing)
    assert scrub.text(f"said: {echoed} (end)") == "said: [key] (end)"
    line = scrub.line(orjson.dumps({"x": f"said: {echoed} (end)"}))
    assert orjson.loads(line)["x"] == "said: [key] (end)"
    assert scrub.text("fish and chips are 100% fine, ok") == "fish and chips are 100% fine, ok"
