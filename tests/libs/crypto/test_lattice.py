"""The module-lattice core against straightforward scalar versions of the FIPS 203 algorithms."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from parley_crypto import _lattice as lattice

Q = lattice.Q
RNG = np.random.default_rng(20261205)


def random_polys(count: int) -> lattice.Array:
    return RNG.integers(0, Q, size=(count, 256), dtype=np.int64)


def schoolbook(a: list[int], b: list[int]) -> list[int]:
    """a·b in Z_q[X]/(X^256 + 1), coefficient by coefficient."""
    out = [0] * 256
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if i + j < 256:
                out[i + j] += x * y
            else:
                out[i + j - 256] -= x * y
    return [c % Q for c in out]


def bit_reverse7(value: int) -> int:
    return int(f"{value:07b}"[::-1], 2)


def scalar_ntt(f: list[int]) -> list[int]:
    """FIPS 203 Algorithm 9, loop for loop."""
    f = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, 256, 2 * length):
            zeta = pow(17, bit_reverse7(i), Q)
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = (f[j] - t) % Q
                f[j] = (f[j] + t) % Q
        length //= 2
    return f


def scalar_sample_ntt(seed: bytes) -> list[int]:
    """FIPS 203 Algorithm 7 on a long-enough SHAKE128 squeeze."""
    stream = hashlib.shake_128(seed).digest(1680)
    out: list[int] = []
    pos = 0
    while len(out) < 256:
        b0, b1, b2 = stream[pos : pos + 3]
        pos += 3
        for d in (b0 + 256 * (b1 % 16), b1 // 16 + 16 * b2):
            if d < Q and len(out) < 256:
                out.append(d)
    return out


def test_ntt_matches_the_textbook_butterflies() -> None:
    f = random_polys(1)[0]
    assert lattice.ntt(f).tolist() == scalar_ntt(f.tolist())


def test_inverse_ntt_undoes_ntt_for_a_whole_vector() -> None:
    f = random_polys(4)
    assert np.array_equal(lattice.inverse_ntt(lattice.ntt(f)), f)


def test_ntt_accepts_negative_noise_coefficients() -> None:
    noise = RNG.integers(-3, 4, size=(2, 256), dtype=np.int64)
    assert np.array_equal(lattice.inverse_ntt(lattice.ntt(noise)), noise % Q)


def test_multiplication_in_the_ntt_domain_is_negacyclic_multiplication() -> None:
    a, b = random_polys(2)
    product = lattice.inverse_ntt(lattice.multiply_ntts(lattice.ntt(a), lattice.ntt(b)))
    assert product.tolist() == schoolbook(a.tolist(), b.tolist())


@pytest.mark.parametrize("transpose", [False, True])
def test_matrix_vector_sums_the_products_of_each_row(transpose: bool) -> None:
    matrix = random_polys(9).reshape(3, 3, 256)
    vector = random_polys(3)
    result = lattice.matrix_vector(matrix, vector, transpose=transpose)
    for i in range(3):
        expected = np.zeros(256, dtype=np.int64)
        for j in range(3):
            entry = matrix[j, i] if transpose else matrix[i, j]
            expected = (expected + lattice.multiply_ntts(entry, vector[j])) % Q
        assert np.array_equal(result[i], expected)


def test_inner_product_sums_pairwise_products() -> None:
    a, b = random_polys(4), random_polys(4)
    expected = sum(lattice.multiply_ntts(a[i], b[i]) for i in range(4)) % Q
    assert np.array_equal(lattice.inner_product(a, b), expected)


def test_sample_matrix_matches_sample_ntt_entry_by_entry() -> None:
    rho = os.urandom(32)
    matrix = lattice.sample_matrix(rho, 4)
    for i in range(4):
        for j in range(4):
            assert matrix[i, j].tolist() == scalar_sample_ntt(rho + bytes((j, i)))


def test_sample_matrix_squeezes_further_when_the_first_squeeze_falls_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # One block yields at most 112 candidates, so every entry takes the longer-squeeze path, some more than once.
    monkeypatch.setattr(lattice, "_XOF_FIRST_SQUEEZE", 168)
    rho = os.urandom(32)
    matrix = lattice.sample_matrix(rho, 2)
    assert matrix[1, 0].tolist() == scalar_sample_ntt(rho + bytes((0, 1)))


def test_sample_matrix_squeezes_only_the_rows_that_fall_short() -> None:
    # About one entry in 120 has fewer than 256 accepted candidates in the first squeeze: find a seed whose
    # matrix mixes such entries with full ones.
    for counter in range(2000):
        rho = hashlib.sha256(counter.to_bytes(2, "big")).digest()
        streams = b"".join(
            hashlib.shake_128(rho + bytes((j, i))).digest(lattice._XOF_FIRST_SQUEEZE)
            for i in range(4)
            for j in range(4)
        )
        short = (np.count_nonzero(lattice._uniform_candidates(streams, 16) < Q, axis=1) < 256).sum()
        if 0 < short < 16:
            break
    else:
        pytest.fail("no seed with short and full rows")
    matrix = lattice.sample_matrix(rho, 4)
    for i in range(4):
        for j in range(4):
            assert matrix[i, j].tolist() == scalar_sample_ntt(rho + bytes((j, i)))


def test_encryption_in_one_pass_gives_the_bytes_of_its_two_halves() -> None:
    params = lattice.Params(k=3, eta1=2, eta2=2, du=10, dv=4)
    rho, sigma, message, coins = (os.urandom(32) for _ in range(4))
    matrix = lattice.sample_matrix(rho, params.k)
    t_hat, _ = lattice.pke_keygen_with_matrix(matrix, sigma, params)
    c1, r_hat, e2 = lattice.pke_encrypt_c1(matrix, coins, params)
    halves = c1 + lattice.pke_encrypt_c2(t_hat, r_hat, e2, message, params)
    assert lattice.pke_encrypt_with(lattice.encryption_matrix(matrix, t_hat), message, coins, params) == halves
    assert lattice.pke_encrypt(t_hat, rho, message, coins, params) == halves


def test_cbd_counts_bits_as_fips_203_algorithm_8() -> None:
    data = os.urandom(128)
    bits = [(data[i // 8] >> (i % 8)) & 1 for i in range(1024)]
    expected = [sum(bits[4 * i : 4 * i + 2]) - sum(bits[4 * i + 2 : 4 * i + 4]) for i in range(256)]
    assert lattice.sample_cbd(data, 2)[0].tolist() == expected


def test_noise_polynomials_use_consecutive_nonces() -> None:
    seed = os.urandom(32)
    noise = lattice.sample_noise(seed, 5, 2, 3)
    assert np.array_equal(noise[1], lattice.sample_cbd(hashlib.shake_256(seed + b"\x06").digest(192), 3)[0])
    assert int(np.abs(noise).max()) <= 3


@pytest.mark.parametrize("d", [1, 4, 5, 10, 11])
def test_decompress_then_compress_is_identity_and_compression_error_is_bounded(d: int) -> None:
    values = np.arange(1 << d, dtype=np.int64)
    assert np.array_equal(lattice.compress(lattice.decompress(values, d), d), values)
    x = np.arange(Q, dtype=np.int64)
    error = (lattice.decompress(lattice.compress(x, d), d) - x) % Q
    centered = np.minimum(error, Q - error)
    assert int(centered.max()) <= round(Q / (1 << (d + 1)))


@pytest.mark.parametrize("d", [1, 4, 10, 11, 12])
def test_byte_encode_packs_least_significant_bit_first(d: int) -> None:
    values = RNG.integers(0, 1 << d, size=(2, 256), dtype=np.int64)
    encoded = lattice.byte_encode(values, d)
    assert len(encoded) == 2 * 32 * d
    as_int = int.from_bytes(encoded, "little")
    assert [(as_int >> (d * i)) & ((1 << d) - 1) for i in range(512)] == values.reshape(-1).tolist()
    assert np.array_equal(lattice.byte_decode(encoded, d), values)


def test_decode_vector_applies_the_modulus_check() -> None:
    params = lattice.Params(k=2, eta1=3, eta2=2, du=10, dv=4)
    values = random_polys(2)
    assert np.array_equal(lattice.decode_vector(lattice.byte_encode(values, 12), params), values)
    values[1, 7] = Q
    assert lattice.decode_vector(lattice.byte_encode(values, 12), params) is None


def test_pke_round_trip_with_eta1_unlike_eta2() -> None:
    # Kyber512's parameters exercise the path where r and the errors come from different distributions.
    params = lattice.Params(k=2, eta1=3, eta2=2, du=10, dv=4)
    rho, sigma, message, coins = (os.urandom(32) for _ in range(4))
    t_hat, s_hat = lattice.pke_keygen(rho, sigma, params)
    ciphertext = lattice.pke_encrypt(t_hat, rho, message, coins, params)
    assert len(ciphertext) == params.ciphertext_bytes
    assert lattice.pke_decrypt(s_hat, ciphertext, params) == message
