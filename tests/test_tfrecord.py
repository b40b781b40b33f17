"""TFRecord framing and tf.train.Example coding, checked against protobuf and the `tfrecord` package."""

import gzip
import struct

import numpy as np
import pytest
from tfrecord import example_pb2
from tfrecord.reader import tfrecord_loader

from condgen.errors import DataError, OutputExistsError
from condgen.tfrecord import (
    decode_example,
    encode_example,
    index_records,
    iter_records,
    masked_crc32c,
    read_record_at,
    write_tfrecord,
)

N_REAL_RECORDS = 84


@pytest.fixture
def real_tfrecord(nsynth_dir):
    return nsynth_dir / "nsynth-mini.tfrecord"


def small_examples(n_examples=3):
    return [
        {
            "index": i,
            "name": f"example-{i}",
            "values": np.arange(5, dtype=np.float32) * (i + 0.5),
        }
        for i in range(n_examples)
    ]


def test_masked_crc_matches_check_value():
    # CRC32C("123456789") is 0xE3069283, the standard check value of the Castagnoli polynomial.
    crc = 0xE3069283
    expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == expected


def test_example_round_trip_all_kinds():
    features = {
        "floats": np.array([0.0, -1.5, 3.25, 1e-8, np.float32(np.pi)], dtype=np.float32),
        "ints": np.array([0, 1, -1, 300, -(2**63), 2**63 - 1], dtype=np.int64),
        "int_scalar": -7,
        "int_list": [5, -300],
        "bytes": [b"abc", b"\x00\xff", b""],
        "text": "héllo",
        "empty": [],
    }
    decoded = decode_example(encode_example(features))

    assert decoded["floats"].dtype == np.float32
    np.testing.assert_array_equal(decoded["floats"], features["floats"])
    assert decoded["ints"].dtype == np.int64
    np.testing.assert_array_equal(decoded["ints"], features["ints"])
    assert decoded["int_scalar"].tolist() == [-7]
    assert decoded["int_list"].tolist() == [5, -300]
    assert decoded["bytes"] == [b"abc", b"\x00\xff", b""]
    assert decoded["text"] == ["héllo".encode("utf-8")]
    assert decoded["empty"] == []


def test_encoding_parses_with_protobuf():
    features = {
        "floats": np.array([1.5, -2.0], dtype=np.float32),
        "ints": np.array([-1, 2**40, -(2**63)], dtype=np.int64),
        "bytes": [b"x", b"yz"],
    }
    message = example_pb2.Example()
    message.ParseFromString(encode_example(features))
    feature = message.features.feature

    assert list(feature["floats"].float_list.value) == [1.5, -2.0]
    assert list(feature["ints"].int64_list.value) == [-1, 2**40, -(2**63)]
    assert list(feature["bytes"].bytes_list.value) == [b"x", b"yz"]


def test_negative_int64_is_ten_byte_varint():
    message = example_pb2.Example()
    message.features.feature["n"].int64_list.value.append(-1)
    reference = message.SerializeToString()

    assert encode_example({"n": -1}) == reference
    assert decode_example(reference)["n"].tolist() == [-1]


def test_decode_unpacked_int64_and_floats():
    # Field 1 of Int64List and FloatList written one value at a time (unpacked).
    int64_list = b"\x08\x05" + b"\x08" + b"\xff" * 9 + b"\x01"  # 5, then -1
    float_list = b"\x0d" + struct.pack("<f", 2.5) + b"\x0d" + struct.pack("<f", -1.0)

    def feature_entry(name, kind, payload):
        feature = bytes([(kind << 3) | 2, len(payload)]) + payload
        entry = bytes([0x0A, len(name)]) + name + bytes([0x12, len(feature)]) + feature
        return bytes([0x0A, len(entry)]) + entry

    features = feature_entry(b"i", 3, int64_list) + feature_entry(b"f", 2, float_list)
    data = bytes([0x0A, len(features)]) + features

    decoded = decode_example(data)

    assert decoded["i"].tolist() == [5, -1]
    assert decoded["f"].tolist() == [2.5, -1.0]


def test_decode_malformed_names_source():
    data = encode_example({"values": np.arange(4, dtype=np.float32)})
    with pytest.raises(DataError, match="demo.tfrecord: record at byte 16"):
        decode_example(data[:-3], source="demo.tfrecord: record at byte 16")


def test_real_file_has_84_records(real_tfrecord):
    records = list(iter_records(real_tfrecord))

    assert len(records) == N_REAL_RECORDS
    assert records[0][0] == 0
    assert [offset for offset, _ in records] == [offset for offset, _ in index_records(real_tfrecord)]


def test_real_file_decode_matches_tfrecord_package(real_tfrecord):
    ours = [decode_example(data) for _, data in iter_records(real_tfrecord)]
    theirs = list(tfrecord_loader(str(real_tfrecord), None))

    assert len(ours) == len(theirs) == N_REAL_RECORDS
    for our_example, their_example in zip(ours, theirs):
        assert set(our_example) == set(their_example)
        for name, value in our_example.items():
            reference = their_example[name]
            if isinstance(value, list):
                # The package returns a lone byte string unwrapped and longer lists as an array.
                reference = [reference] if isinstance(reference, bytes) else list(reference)
                assert value == reference, name
            else:
                assert value.dtype == reference.dtype, name
                np.testing.assert_array_equal(value, reference, err_msg=name)


def test_real_file_reencodes_to_same_message(real_tfrecord):
    offset, data = next(iter_records(real_tfrecord))
    original = example_pb2.Example()
    original.ParseFromString(data)
    reencoded = example_pb2.Example()
    reencoded.ParseFromString(encode_example(decode_example(data)))

    assert reencoded == original


def test_read_record_at_index(real_tfrecord):
    records = dict(iter_records(real_tfrecord))
    index = index_records(real_tfrecord)

    with open(real_tfrecord, "rb") as file:
        for offset, length in index[::10]:
            data = read_record_at(file, offset)
            assert len(data) == length
            assert data == records[offset]
    assert read_record_at(real_tfrecord, index[-1][0]) == records[index[-1][0]]


def test_read_record_at_wrong_offset(real_tfrecord):
    with pytest.raises(DataError, match=r"record at byte 5\b.*length field does not match"):
        read_record_at(real_tfrecord, 5)


def test_write_then_read_small_file(tmp_path):
    path = tmp_path / "small.tfrecord"
    examples = small_examples()

    assert write_tfrecord(path, examples) == 3

    decoded = [decode_example(data) for _, data in iter_records(path)]
    assert [example["index"].tolist() for example in decoded] == [[0], [1], [2]]
    assert [example["name"] for example in decoded] == [[b"example-0"], [b"example-1"], [b"example-2"]]
    np.testing.assert_array_equal(decoded[2]["values"], examples[2]["values"])
    # The tfrecord package reads the framing independently.
    theirs = list(tfrecord_loader(str(path), None))
    assert [int(example["index"][0]) for example in theirs] == [0, 1, 2]


def test_write_refuses_existing_file(tmp_path):
    path = tmp_path / "small.tfrecord"
    write_tfrecord(path, small_examples(1))

    with pytest.raises(OutputExistsError, match="small.tfrecord"):
        write_tfrecord(path, small_examples(2))
    assert len(list(iter_records(path))) == 1

    write_tfrecord(path, small_examples(2), force=True)
    assert len(list(iter_records(path))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.tfrecord"]


def test_write_failure_leaves_no_file(tmp_path):
    path = tmp_path / "broken.tfrecord"

    def examples():
        yield {"a": 1}
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_tfrecord(path, examples())
    assert list(tmp_path.iterdir()) == []


def test_flipped_data_byte_names_offset(tmp_path):
    path = tmp_path / "corrupt.tfrecord"
    write_tfrecord(path, small_examples())
    second_offset = index_records(path)[1][0]
    raw = bytearray(path.read_bytes())
    raw[second_offset + 12 + 5] ^= 0x01
    path.write_bytes(bytes(raw))

    records = iter_records(path)
    next(records)
    with pytest.raises(DataError, match=rf"corrupt.tfrecord: record at byte {second_offset}\b.*CRC of the record data"):
        next(records)


def test_flipped_length_byte_is_corrupt(tmp_path):
    path = tmp_path / "corrupt.tfrecord"
    write_tfrecord(path, small_examples(1))
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x04
    path.write_bytes(bytes(raw))

    with pytest.raises(DataError, match="record at byte 0.*CRC of the length field"):
        list(iter_records(path))
    with pytest.raises(DataError, match="record at byte 0.*CRC of the length field"):
        index_records(path)


def test_truncated_final_record(tmp_path):
    path = tmp_path / "cut.tfrecord"
    write_tfrecord(path, small_examples())
    last_offset = index_records(path)[-1][0]
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])

    records = iter_records(path)
    assert len([next(records), next(records)]) == 2
    with pytest.raises(DataError, match=rf"cut.tfrecord: record at byte {last_offset}\b.*truncated"):
        next(records)
    with pytest.raises(DataError, match=rf"record at byte {last_offset}\b.*truncated"):
        index_records(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "cut.tfrecord"
    write_tfrecord(path, small_examples(1))
    size = path.stat().st_size
    with open(path, "ab") as file:
        file.write(b"\x07\x00\x00")

    with pytest.raises(DataError, match=rf"record at byte {size}\b.*truncated.*header has 3 of 12 bytes"):
        list(iter_records(path))


def test_empty_file_has_no_records(tmp_path):
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")

    assert list(iter_records(path)) == []
    assert index_records(path) == []


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="absent.tfrecord: TFRecord file not found"):
        list(iter_records(tmp_path / "absent.tfrecord"))


def test_gzip_round_trip(tmp_path):
    plain = tmp_path / "plain.tfrecord"
    compressed = tmp_path / "compressed.tfrecord"
    write_tfrecord(plain, small_examples())
    write_tfrecord(compressed, small_examples(), compress=True)

    assert compressed.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(compressed.read_bytes()) == plain.read_bytes()
    assert list(iter_records(compressed)) == list(iter_records(plain))
    theirs = list(tfrecord_loader(str(compressed), None, compression_type="gzip"))
    assert [example["name"] for example in theirs] == [b"example-0", b"example-1", b"example-2"]


def test_gzip_of_real_file(tmp_path, real_tfrecord):
    compressed = tmp_path / "real.tfrecord.gz"
    compressed.write_bytes(gzip.compress(real_tfrecord.read_bytes(), compresslevel=1))

    assert list(iter_records(compressed)) == list(iter_records(real_tfrecord))
    with pytest.raises(DataError, match="gzip-compressed"):
        index_records(compressed)


def test_gzip_truncated_stream(tmp_path):
    compressed = tmp_path / "cut.tfrecord"
    write_tfrecord(compressed, small_examples(), compress=True)
    compressed.write_bytes(compressed.read_bytes()[:-20])

    with pytest.raises(DataError, match="cut.tfrecord"):
        list(iter_records(compressed))
