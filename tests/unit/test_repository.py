"""config.pbtxt validation, version policies and path safety of the model repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.repository import (
    RepositoryError,
    check_version_dir,
    model_dir,
    parse_config,
    read_config,
    read_labels,
    select_versions,
    validate_config,
)

GOOD = """
name: "m"
max_batch_size: 4
input [{ name: "x" data_type: TYPE_FP32 dims: [8] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [2] }]
"""


def write(tmp_path: Path, text: str, name: str = "m") -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.pbtxt").write_text(text)
    return path


def test_valid_config_gets_triton_defaults(tmp_path: Path) -> None:
    config = read_config(write(tmp_path, GOOD), "m")
    assert config.backend == "twofour"
    assert config.instance_group[0].count == 1
    assert config.version_policy.latest.num_versions == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace('"m"', '"other"'), ["field 'name'", "'other'", "'m'"]),
        (GOOD.replace("max_batch_size: 4", "max_batch_size: -1"), ["max_batch_size"]),
        (GOOD.replace("TYPE_FP32 dims: [8]", "TYPE_FP32 dims: [0]"), ["input[0]", "dims"]),
        (GOOD.replace('data_type: TYPE_FP32 dims: [2]', "dims: [2]"), ["output[0]", "data_type"]),
        (GOOD.replace("TYPE_FP32 dims: [8]", "TYPE_STRING dims: [0]"), ["input[0]", "dims"]),
        (GOOD + "dynamic_batching { preferred_batch_size: [16] }", ["preferred_batch_size", "16"]),
        (GOOD.replace("max_batch_size: 4", "max_batch_size: 0") + "dynamic_batching {}", ["max_batch_size > 0"]),
        (GOOD + 'backend: "onnxruntime"', ["backend", "onnxruntime"]),
        ("name: m ]", ["config.pbtxt"]),
    ],
)
def test_invalid_configs_name_file_and_field(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(RepositoryError) as info:
        read_config(write(tmp_path, text), "m")
    message = str(info.value)
    assert "m/config.pbtxt" in message
    for word in words:
        assert word in message


def test_missing_config_is_reported(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(RepositoryError, match="m/config.pbtxt: file is missing"):
        read_config(tmp_path / "m", "m")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("", [3]), ("version_policy { latest { num_versions: 2 } }", [2, 3]), ("version_policy { all {} }", [1, 2, 3]),
     ("version_policy { specific { versions: [1, 3] } }", [1, 3])],
)
def test_version_policies(tmp_path: Path, policy: str, expected: list[int]) -> None:
    path = write(tmp_path, GOOD + policy)
    for v in ("1", "2", "3", "notaversion", "0"):
        (path / v).mkdir()
    config = parse_config(GOOD + policy)
    validate_config(config, "m")
    assert select_versions(path, config) == expected


def test_specific_version_without_directory(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    (path / "1").mkdir()
    config = parse_config(GOOD + "version_policy { specific { versions: [7] } }")
    with pytest.raises(RepositoryError, match=r"\[7\]"):
        select_versions(path, config)


@pytest.mark.parametrize("name", ["../etc", "/abs", "a/b", "..", ".hidden", ""])
def test_model_names_cannot_escape(tmp_path: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        model_dir(tmp_path, name)


def test_symlinked_model_outside_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "repo"
    root.mkdir()
    (root / "evil").symlink_to(outside)
    with pytest.raises(RepositoryError, match="outside the model repository"):
        model_dir(root, "evil")


def test_pickle_in_version_dir_is_refused(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "program.pt2").write_bytes(b"x")
    (version / "weights.safetensors").write_bytes(b"x")
    (version / "model.pt").write_bytes(b"x")
    with pytest.raises(RepositoryError, match="pickle files are never loaded"):
        check_version_dir(version, "m", 1)


def test_version_dir_needs_program_and_weights(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    with pytest.raises(RepositoryError, match="program.pt2 is missing"):
        check_version_dir(version, "m", 1)


def test_string_tensors_are_allowed_for_inputs_and_outputs(tmp_path: Path) -> None:
    text = GOOD.replace('input [{ name: "x" data_type: TYPE_FP32 dims: [8] }]',
                        'input [{ name: "x" data_type: TYPE_FP32 dims: [8] },'
                        ' { name: "text" data_type: TYPE_STRING dims: [1] optional: true }]')
    text = text.replace('TYPE_FP32 dims: [2]', 'TYPE_STRING dims: [2]')
    config = read_config(write(tmp_path, text), "m")
    assert [t.data_type for t in config.input][1] == config.output[0].data_type


LABELLED = GOOD.replace('dims: [2] }', 'dims: [2] label_filename: "labels.txt" }')


def test_labels_are_read_one_per_line_as_triton_does(tmp_path: Path) -> None:
    path = write(tmp_path, LABELLED)
    (path / "labels.txt").write_bytes("cat\n\nd\u00f6g:x\n".encode())
    labels = read_labels(path, read_config(path, "m"))
    assert labels == {"y": (b"cat", b"", "d\u00f6g:x".encode())}  # the final newline ends a label, not starts one


@pytest.mark.parametrize(("filename", "words"), [
    ("labels.txt", ["output[0] (y)", "'labels.txt'", "missing"]),
    ("../labels.txt", ["inside the model directory"]),
    ("/etc/passwd", ["inside the model directory"]),
])
def test_bad_label_files_are_repository_errors(tmp_path: Path, filename: str, words: list[str]) -> None:
    path = write(tmp_path, LABELLED.replace("labels.txt", filename))
    (tmp_path / "labels.txt").write_text("outside\n")
    with pytest.raises(RepositoryError) as info:
        read_labels(path, read_config(path, "m"))
    assert all(w in str(info.value) for w in words), str(info.value)
