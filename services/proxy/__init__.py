"""The enforcement proxy: OpenAI- and Anthropic-compatible, policy-driven, emits usage."""
