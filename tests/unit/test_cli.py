"""The serve CLI is generated from Settings: flags, environment variables and precedence agree."""

from __future__ import annotations

import pytest

from server.cli import build_parser, main, settings_from_args
from server.settings import Settings


def test_every_setting_is_a_flag() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert "TWOFOUR_" + name.upper() in help_text


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFOUR_HTTP_PORT", "9000")
    monkeypatch.setenv("TWOFOUR_GRPC_PORT", "9001")
    args = build_parser().parse_args(["serve", "--http-port", "7000", "--load-model", "a", "--load-model", "b"])
    settings = settings_from_args(args)
    assert settings.http_port == 7000 and settings.grpc_port == 9001 and settings.load_model == ["a", "b"]


def test_invalid_setting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--http-port", "70000"]) == 2
    assert "http_port" in capsys.readouterr().err


def test_cuda_without_gpu_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["serve", "--device", "cuda", "--model-repository", "model_repo"]) == 2
    assert "--device cuda was requested but CUDA is not available" in capsys.readouterr().err
