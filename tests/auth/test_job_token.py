import base64
from pathlib import Path

import pytest

from aifacility.auth.jobs import job_token_secret, read_session_token


def test_job_gets_the_token_as_a_secret_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    parts = job_token_secret("train-7", "aifacility", read_session_token(token_file),
                             token_file="/tmp/aifacility/token")
    secret = parts["secret"]
    assert secret["metadata"]["name"] == "train-7-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == "tok-123"
    assert parts["volume"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert parts["volume_mount"] == {"name": "aifacility-token", "mountPath": "/tmp/aifacility", "readOnly": True}
    assert {"name": "BEARER_TOKEN_FILE", "value": "/tmp/aifacility/token"} in parts["env"]
    assert "tok-123" not in str(parts["env"]) + str(parts["volume"])


def test_bad_inputs_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        job_token_secret("Train_7", "aifacility", "t")
    with pytest.raises(RuntimeError, match="cannot read the session's token file"):
        read_session_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("")
    with pytest.raises(RuntimeError, match="is empty"):
        read_session_token(tmp_path / "empty")
