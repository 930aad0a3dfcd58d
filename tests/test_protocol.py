"""protocol v1: encode/decode round trips, non-finite floats, garbage and oversized lines."""
from __future__ import annotations

import json
import math

import pytest

from segwatch.protocol import (
    EVENT_FIELDS, MAX_LINE_BYTES, LineDecoder, ProtocolError, as_float, decode, encode, make_event, read_events,
)


def test_round_trip_every_type_with_required_fields():
    samples = {int: 3, str: "x", float: 1.5, bool: True}
    for type_, fields in EVENT_FIELDS.items():
        kw = {name: samples[types[0]] for name, types in fields.items()}
        ev = make_event(type_, **kw)
        back = decode(encode(ev))
        assert back == ev, type_


def test_envelope():
    ev = make_event("step", step=1)
    assert ev["v"] == 1 and ev["type"] == "step" and isinstance(ev["t"], float)
    assert make_event("step", step=1, t=5.0)["t"] == 5.0


def test_nonfinite_travel_as_strings():
    ev = make_event("step", step=7, loss=float("nan"), grad_norm=float("inf"), lr=[float("-inf"), 1e-4],
                    layer_norms=[["a", float("nan")]])
    line = encode(ev)
    assert b"NaN" not in line and b"Infinity" not in line
    json.loads(line)  # strict JSON
    back = decode(line)
    assert back["loss"] == "nan" and math.isnan(as_float(back["loss"]))
    assert as_float(back["grad_norm"]) == math.inf
    assert as_float(back["lr"][0]) == -math.inf and as_float(back["lr"][1]) == 1e-4
    assert as_float(None) is None
    with pytest.raises(ProtocolError):
        as_float("NaNx")


def test_encode_is_one_line_and_unicode_safe():
    line = encode(make_event("output", stream="stdout", line="mIoU 2.7% 预测\n第二行"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line)["line"] == "mIoU 2.7% 预测\n第二行"


@pytest.mark.parametrize("line,why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"type":"step","t":1,"step":1}', "version"),
    (b'{"v":99,"type":"step","t":1,"step":1}', "newer"),
    (b'{"v":1,"type":"bogus","t":1}', "unknown event type"),
    (b'{"v":1,"type":"step","step":1}', "timestamp"),
    (b'{"v":1,"type":"step","t":1}', "step"),
    (b'{"v":1,"type":"step","t":1,"step":"3"}', "step"),
    (b'{"v":1,"type":"step","t":1,"step":true}', "step"),
    (b'{"v":1,"type":"ack","t":1,"ok":1}', "ok"),
    (b"\xff\xfe\x00garbage", "not JSON"),
])
def test_decode_rejects(line, why):
    with pytest.raises(ProtocolError) as exc:
        decode(line)
    assert why in str(exc.value)


def test_unknown_fields_are_kept():
    ev = decode(b'{"v":1,"type":"step","t":1,"step":1,"future_field":{"a":1}}')
    assert ev["future_field"] == {"a": 1}


def test_encode_refuses_oversized_event():
    with pytest.raises(ProtocolError):
        encode(make_event("output", stream="stdout", line="x" * (MAX_LINE_BYTES + 10)))


def test_line_decoder_split_feeds():
    lines = b"".join(encode(make_event("step", step=i, loss=0.5)) for i in range(50))
    dec = LineDecoder()
    got = []
    for i in range(0, len(lines), 7):  # arbitrary split points, mid-line and mid-UTF-8
        got.extend(dec.feed(lines[i:i + 7]))
    assert [e["step"] for e in got] == list(range(50))
    assert dec.invalid == 0


def test_line_decoder_counts_garbage_and_survives():
    dec = LineDecoder()
    data = b"".join(b"garbage %d\n" % i for i in range(5000))
    data += b"\n\n   \n"  # blank lines are not errors
    data += encode(make_event("step", step=1))
    got = list(dec.feed(data))
    assert [e["type"] for e in got] == ["step"]
    assert dec.invalid == 5000 and len(dec.errors) == 10


def test_line_decoder_oversized_line_streamed():
    dec = LineDecoder()
    got = []
    chunk = b"y" * 65536
    for _ in range((MAX_LINE_BYTES // len(chunk)) + 3):  # never buffered whole
        got.extend(dec.feed(chunk))
        assert len(dec._buf) <= MAX_LINE_BYTES + len(chunk)
    got.extend(dec.feed(b"tail\n" + encode(make_event("step", step=2))))
    assert [e["step"] for e in got] == [2]
    assert dec.oversized == 1 and dec.invalid == 1


def test_line_decoder_oversized_line_in_one_feed():
    dec = LineDecoder()
    got = list(dec.feed(b"z" * (MAX_LINE_BYTES + 5) + b"\n" + encode(make_event("step", step=3))))
    assert [e["step"] for e in got] == [3]
    assert dec.oversized == 1


def test_read_events_skips_invalid_and_handles_missing_newline():
    lines = [encode(make_event("step", step=1)), b"junk\n", encode(make_event("step", step=2)).rstrip(b"\n")]
    dec = LineDecoder()
    assert [e["step"] for e in read_events(lines, dec)] == [1, 2]
    assert dec.invalid == 1
    assert [e["step"] for e in read_events([l.decode() for l in lines if l != b"junk\n"])] == [1, 2]
