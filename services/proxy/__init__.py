"""The enforcement proxy: OpenAI- and Anthropic-compatible, policy-driven, emits usage.

Clients point their SDK at the proxy (`base_url`) and use a virtual key as their API key. The
proxy attributes the request (keys.py), decides from the budgets and policies it reads from
Kafka (enforcement.py, feed.py), forwards it upstream with aiohttp (forward.py), and records
the usage through a durable spool to the `usage` topic (emitter.py, spool.py).

Run: `allotment proxy [--port 8080] [--keys-file keys.yaml] [--spool-dir DIR] [--fail-closed]`.
Environment: ALLOTMENT_KAFKA_BOOTSTRAP, ALLOTMENT_TOPIC_PREFIX, ALLOTMENT_PROXY_HOST/PORT,
ALLOTMENT_PROXY_{OPENAI,ANTHROPIC}_UPSTREAM (base URLs, without /v1),
ALLOTMENT_PROXY_{OPENAI,ANTHROPIC}_API_KEY (the real provider keys),
ALLOTMENT_PROXY_KEYS_FILE or ALLOTMENT_PROXY_KEYS (JSON),
ALLOTMENT_PROXY_SPOOL_DIR, ALLOTMENT_PROXY_FAIL_OPEN, ALLOTMENT_PROXY_CONCISE_PROMPT,
ALLOTMENT_PROXY_MAX_BODY_BYTES, ALLOTMENT_PROXY_DEFAULT_OUTPUT_ESTIMATE (reservations),
ALLOTMENT_PROXY_SERVER (uvicorn | aiohttp). `allotment proxy-hash-key SECRET` prints a key's
at-rest form.

Endpoints: POST /v1/chat/completions, /v1/responses, /v1/embeddings (OpenAI) and /v1/messages
(Anthropic), streaming and not; GET /healthz, /readyz (ready once policies are caught up),
/metrics (Prometheus).
Request headers: `x-allotment-feature`, `x-allotment-tags` (comma-separated), or
`metadata.allotment_feature` / `metadata.allotment_tags` in the body (removed before forwarding).
Response headers: `x-allotment-policy`, `x-allotment-budget` (the tightest matched budget),
`x-allotment-budget-remaining-tokens`, `x-allotment-budget-reset`, `x-allotment-routed` (on a
demotion), `x-allotment-policy-state: catching-up` (fail-open at boot), `retry-after` and
`x-should-retry: false` (on a hard_stop 429: the official SDKs then raise at once instead of
retrying a refusal that lasts until the reset).
The client's `accept-encoding` is not forwarded: the proxy's upstream client asks for what it
can decode, and the client always gets the answer decoded.
"""
