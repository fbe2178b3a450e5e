from services.common.key_digest import claim_digest, hash_key, is_key_digest

# SHA-256("test"), as published in the FIPS 180 test literature and printed by `sha256sum`.
TEST_DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_a_key_is_stored_as_its_sha256_hex():
    assert hash_key("test") == TEST_DIGEST


def test_only_lower_case_64_hex_digits_are_a_digest():
    assert is_key_digest(TEST_DIGEST)
    assert not is_key_digest(TEST_DIGEST.upper())
    assert not is_key_digest(TEST_DIGEST[:-1])
    assert not is_key_digest(TEST_DIGEST + "0")
    assert not is_key_digest(TEST_DIGEST[:-1] + "g")
    assert not is_key_digest(TEST_DIGEST + "\n")


def test_the_ingest_and_proxy_hash_commands_print_the_same_digest():
    from typer.testing import CliRunner

    from services.cli import build

    runner = CliRunner()
    ingest = runner.invoke(build(), ["ingest-key-hash", "test"])
    proxy = runner.invoke(build(), ["proxy-hash-key", "test"])
    assert (ingest.exit_code, proxy.exit_code) == (0, 0), ingest.output + proxy.output
    assert ingest.output.strip() == proxy.output.strip() == TEST_DIGEST


def test_a_digest_is_claimed_by_one_key_only() -> None:
    holders: dict[str, str] = {}
    assert claim_digest(holders, TEST_DIGEST, "first") is None
    assert claim_digest(holders, TEST_DIGEST, "second") == "appears twice (also key 'first')"
    assert holders == {TEST_DIGEST: "first"}
    assert claim_digest(holders, "0" * 64, "second") is None
