"""POST /v1/embeddings through the proxy, with the official OpenAI SDK (client.embeddings.create).

The mock answers each family's native embeddings endpoint (OpenAI and Mistral /v1/embeddings,
Azure deployments, Gemini :batchEmbedContents, Cohere /v2/embed, Bedrock InvokeModel for
Titan and Cohere Embed) with deterministic unit vectors: 8 values unless `dimensions` asks
otherwise, and it bills "words + 1" tokens per text, a count unlike modelux's 4-characters
estimate, so a test can tell reported usage from estimated usage.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import time
import uuid

import openai
import pytest

# catalog model, upstream id the mock sees, whether the family reports token counts
FAMILIES = [
    ("openai", "text-embedding-3-small", "text-embedding-3-small", True),
    ("azure", "azure/text-embedding-3-small", "text-embedding-3-small", True),
    ("gemini", "gemini-embedding-001", "gemini-embedding-001", False),
    ("cohere", "embed-english-v3.0", "embed-english-v3.0", True),
    ("mistral", "mistral-embed", "mistral-embed", True),
    ("bedrock-cohere", "bedrock/cohere-embed-english-v3", "cohere.embed-english-v3", True),
]
TEXTS = ["a b c d", "jumps"]  # the mock bills 5 + 2 tokens; the estimate would be 2 + 2
MOCK_TOKENS = 7


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


@pytest.mark.parametrize("name,model,upstream,reports_usage", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_family_answers_in_openai_shape(shared_proxy, mock, name, model, upstream, reports_usage):
    client = shared_proxy.client()
    raw = client.embeddings.with_raw_response.create(model=model, input=TEXTS, encoding_format="float")
    r = raw.parse()
    assert len(r.data) == 2
    assert [d.index for d in r.data] == [0, 1]
    for d in r.data:
        assert len(d.embedding) == 8
        assert norm(d.embedding) == pytest.approx(1.0, rel=1e-5)
    assert r.data[0].embedding != r.data[1].embedding
    assert r.model == model
    expected = MOCK_TOKENS if reports_usage else 2 + 2
    assert r.usage.prompt_tokens == expected
    assert r.usage.total_tokens == expected
    assert raw.headers["x-modelux-served-by"].endswith("/" + model)
    assert mock.requests_for(upstream) == 1
    t = shared_proxy.trace(raw.headers["x-request-id"])
    assert t["ok"] and t["served_model"] == model
    assert t["usage"]["prompt_tokens"] == expected
    assert t["tags"]["endpoint"] == "embeddings"  # tells embeddings from chat in trace queries


def test_titan_on_bedrock_embeds_one_text(shared_proxy, mock):
    client = shared_proxy.client()
    r = client.embeddings.create(model="bedrock/titan-embed-text-v2", input="one two", dimensions=4, encoding_format="float")
    assert len(r.data) == 1 and len(r.data[0].embedding) == 4
    assert r.usage.prompt_tokens == 3  # Titan's inputTextTokenCount
    assert mock.requests_for("amazon.titan-embed-text-v2:0") == 1


def test_sdk_default_base64_and_dimensions(shared_proxy):
    # The SDK asks for base64 unless told otherwise and decodes it back to floats.
    client = shared_proxy.client()
    r = client.embeddings.create(model="text-embedding-3-small", input="hello world", dimensions=16)
    assert len(r.data[0].embedding) == 16
    assert norm(r.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    raw = shared_proxy.request(
        "POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello world", "dimensions": 16, "encoding_format": "base64"}
    )
    assert raw.status == 200
    b64 = raw.json()["data"][0]["embedding"]
    floats = list(struct.unpack("<16f", base64.b64decode(b64)))
    assert floats == pytest.approx(r.data[0].embedding, rel=1e-6)


def test_token_id_input_reaches_openai_and_is_refused_where_unsupported(shared_proxy):
    client = shared_proxy.client()
    r = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]], encoding_format="float")
    assert len(r.data) == 2
    assert r.usage.prompt_tokens > 0
    with pytest.raises(openai.APIStatusError) as e:
        client.embeddings.create(model="embed-english-v3.0", input=[[1, 2, 3]])
    assert e.value.status_code == 400
    assert "token" in str(e.value.body).lower()


def embedding_chain(cfg):
    cfg["routing"]["emb"] = {
        "strategy": "fallback",
        "attempts": [
            {"model": "text-embedding-3-small", "timeout_ms": 800},
            {"model": "gemini-embedding-001", "timeout_ms": 800},
            {"model": "embed-english-v3.0", "timeout_ms": 800},
        ],
        "retry_on": ["429", "5xx", "timeout", "malformed"],
        "total_budget_ms": 4000,
    }
    # A chat model in the chain is skipped by embeddings (never tried).
    cfg["routing"]["mixed"] = {
        "strategy": "fallback",
        "attempts": [{"model": "gpt-4o-mini"}, {"model": "mistral-embed"}],
        "retry_on": ["429", "5xx"],
    }


@pytest.mark.parametrize(
    "fault",
    [
        {"error_status": 503, "error_rate": 1.0},
        {"error_status": 429, "error_rate": 1.0, "retry_after_ms": 1},
        {"hang_rate": 1.0},
        {"malformed_rate": 1.0},
    ],
    ids=["503", "429", "hang", "malformed"],
)
def test_failover_across_providers(start_proxy, mock, fault):
    proxy = start_proxy(embedding_chain)
    mock.configure({"text-embedding-3-small": fault})
    raw = proxy.client().embeddings.with_raw_response.create(model="@emb", input=TEXTS, encoding_format="float")
    r = raw.parse()
    assert r.model == "gemini-embedding-001"
    assert len(r.data) == 2
    t = proxy.trace(raw.headers["x-request-id"])
    assert [a["model"] for a in t["attempts"]] == ["text-embedding-3-small", "gemini-embedding-001"]
    assert not t["attempts"][0]["ok"] and t["attempts"][1]["ok"]
    assert mock.requests_for("text-embedding-3-small") == 1


def test_all_targets_down_is_an_openai_error(start_proxy, mock):
    proxy = start_proxy(embedding_chain)
    down = {"error_status": 500, "error_rate": 1.0}
    mock.configure({"text-embedding-3-small": down, "gemini-embedding-001": down, "embed-english-v3.0": down})
    with pytest.raises(openai.APIStatusError) as e:
        proxy.client().embeddings.create(model="@emb", input="x")
    assert e.value.status_code >= 500
    assert mock.requests_for("embed-english-v3.0") == 1


def test_chat_models_in_a_config_are_skipped(start_proxy, mock):
    proxy = start_proxy(embedding_chain)
    raw = proxy.client().embeddings.with_raw_response.create(model="@mixed", input="x", encoding_format="float")
    assert raw.parse().model == "mistral-embed"
    assert mock.requests_for("gpt-4o-mini") == 0
    t = proxy.trace(raw.headers["x-request-id"])
    assert "not an embedding model" in t["reason"]


def test_budget_charges_input_tokens_at_the_catalog_price_and_blocks(start_proxy, mock):
    # 0.02 USD per 1M tokens: the mock bills 7 tokens (1.4e-7 USD); a request reserves its
    # estimate (11 tokens with the message framing, 2.2e-7). Under a 4e-7 cap the third request
    # would pass it (2.8e-7 spent + 2.2e-7) and is refused before it reaches the provider.
    def edit(cfg):
        cfg["budgets"] = [{"name": "emb-cap", "scope": {"project": "e2e"}, "window": "daily", "limit_usd": 4e-7}]

    proxy = start_proxy(edit)
    client = proxy.client()
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=TEXTS, encoding_format="float")
    t = proxy.trace(raw.headers["x-request-id"])
    assert t["cost"]["total_usd"] == pytest.approx(MOCK_TOKENS * 0.02 / 1e6, rel=1e-6)
    assert t["cost"]["output_usd"] == 0
    client.embeddings.create(model="text-embedding-3-small", input=TEXTS, encoding_format="float")
    with pytest.raises(openai.APIStatusError) as e:
        client.embeddings.create(model="text-embedding-3-small", input=TEXTS, encoding_format="float")
    assert e.value.status_code == 429
    assert "budget" in str(e.value.body).lower()
    b = [l for l in proxy.request("GET", "/v1/budgets").json()["budgets"] if l["name"] == "emb-cap"][0]
    assert b["spent_usd"] == pytest.approx(2 * MOCK_TOKENS * 0.02 / 1e6, rel=1e-6)
    assert mock.requests_for("text-embedding-3-small") == 2


@pytest.mark.parametrize(
    "body,param",
    [
        ({"input": "x"}, "model"),
        ({"model": "text-embedding-3-small"}, "input"),
        ({"model": "text-embedding-3-small", "input": []}, "input"),
        ({"model": "text-embedding-3-small", "input": ""}, "input"),
        ({"model": "text-embedding-3-small", "input": ["a", 3]}, "input[1]"),
        ({"model": "text-embedding-3-small", "input": {"a": 1}}, "input"),
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": -1}, "dimensions"),
        ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "@not a slug", "input": "x"}, "model"),
    ],
)
def test_malformed_input_is_a_400_naming_the_field(shared_proxy, mock, body, param):
    r = shared_proxy.request("POST", "/v1/embeddings", body)
    assert r.status == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert mock.stats()["total"] == 0


def test_not_json_and_unknown_model(shared_proxy):
    r = shared_proxy.request("POST", "/v1/embeddings", b"{nope", headers={"content-type": "application/json"})
    assert r.status == 400
    r = shared_proxy.request("POST", "/v1/embeddings", {"model": "no-such-embedder", "input": "x"})
    assert r.status == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_client_hanging_up_cancels_the_upstream_call(start_proxy, mock):
    """The caller gives up while the only target hangs: the request ends as cancelled at once,
    not at the 20 s attempt timeout (followed through its own trace, found by its end user)."""
    proxy = start_proxy(lambda cfg: cfg["routing"].update(
        {"slowemb": {"strategy": "single", "model": "text-embedding-3-small", "timeout_ms": 20000}}))
    mock.configure({"text-embedding-3-small": {"hang_rate": 1.0}})
    user = f"hangup-{uuid.uuid4().hex[:12]}"
    data = json.dumps({"model": "@slowemb", "input": "x"}).encode()
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
              + f"authorization: Bearer {proxy.auth['authorization'][7:]}\r\nx-modelux-end-user: {user}\r\n"
                f"content-length: {len(data)}\r\n\r\n".encode() + data)
    deadline = time.monotonic() + 8.0
    while mock.stats()["models"].get("text-embedding-3-small", {}).get("hangs", 0) < 1:
        assert time.monotonic() < deadline, "the upstream never received the request"
        time.sleep(0.005)
    s.close()
    t_closed = time.monotonic()
    trace = None
    while trace is None:  # the trace is written when the request ends
        assert time.monotonic() - t_closed < 8.0, "no trace 8 s after the client hung up: request still running"
        traces = proxy.request("GET", "/v1/traces").json()["data"]
        trace = next((t for t in traces if t["end_user"] == user), None)
        if trace is None:
            time.sleep(0.01)
    assert trace["ok"] is False
    assert trace["error_kind"] == "cancelled", trace
    assert trace["total_ms"] < 8000
