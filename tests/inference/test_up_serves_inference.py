"""``sparsegrad up`` starts the inference server by default and points the API at it: a completion of a registered
base decoder goes API → inference server → back, and the server's log is among the service's logs."""

from __future__ import annotations

import json
from pathlib import Path

from service.conftest import embedded_up
from support.endpoints import wait_for


def test_up_starts_the_inference_server_and_the_api_reaches_it(tmp_path: Path, tiny_model_dir: Path,
                                                               tiny_llama_dir: Path) -> None:
    models = {"tiny-bert": str(tiny_model_dir), "tiny-llama": str(tiny_llama_dir)}
    with embedded_up(tmp_path, tiny_model_dir, {"SPARSEGRAD_MODELS": json.dumps(models)}) as up:
        body = {"model": "tiny-llama", "prompt": "Hello there", "max_tokens": 3, "temperature": 0}
        with up.client() as client:
            # 503 (inference_unavailable) while the inference server still starts, then the answer
            response = wait_for(lambda: (r := client.post("/v1/completions", json=body)).status_code != 503 and r,
                                120, "the inference server to answer", tmp_path / "up.log")
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["model"] == "tiny-llama" and 1 <= answer["usage"]["completion_tokens"] <= 3
            wrong = client.post("/v1/chat/completions", json={"model": "tiny-bert", "messages": [
                {"role": "user", "content": "hi"}]})
            assert wrong.status_code == 400 and "/v1/predict" in wrong.text
        assert (up.data_dir / "logs" / "inference.log").is_file()
        assert "Inference  http://127.0.0.1:" in (tmp_path / "up.log").read_text()
