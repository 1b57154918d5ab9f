"""The module-lattice core shared by round-3 Kyber and ML-KEM (FIPS 203): ring arithmetic and the K-PKE scheme.

Polynomials of R_q = Z_q[X]/(X^256 + 1), q = 3329, are numpy ``int64`` arrays whose last axis holds the 256
coefficients; a vector of k polynomials is a ``(k, 256)`` array and a matrix a ``(k, k, 256)`` one, so each step
below runs once for a whole vector instead of once per coefficient in Python.

Why it is shaped this way:
- The NTT is linear over Z_q, so it is a matrix product, factored in two products of 16x16 matrices (the
  butterflies of length 16 and more, then those of length 8 and less) built once at import by running the
  textbook butterfly loops (FIPS 203 Algorithms 9 and 10) on the identity. The products run in float64 (BLAS)
  and stay exact (see :func:`_reduce`). Measured here, a whole 4-polynomial vector transforms in less time
  than a single numpy butterfly layer takes.
- Base multiplication (FIPS 203 Algorithm 12) multiplies the 128 degree-1 residues pairwise with their gammas;
  matrix-vector products sum those over the rank axis before a single reduction (int64 cannot overflow: each
  term is below 2q^2 and at most 4 are summed).
- Rejection sampling of the public matrix squeezes enough SHAKE128 output for all k^2 entries at once and only
  falls back to a longer squeeze for the rare entry that did not yield 256 coefficients.

Both KEMs share everything up to the K-PKE layer (:func:`pke_keygen`, :func:`pke_encrypt`, :func:`pke_decrypt`);
they differ only in how the seeds and the shared secret are hashed (see ``_kyber1024.py`` and
``_mlkem768_incremental.py``). :func:`pke_encrypt_c1` and :func:`pke_encrypt_c2` split encryption the way the
incremental ML-KEM needs: the first half depends only on the matrix seed, the second on the noisy vector t.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

Q: Final = 3329
N: Final = 256
# 128^-1 mod q: the scale the inverse NTT applies after its butterflies (FIPS 203 Algorithm 10, last step).
_INV_128: Final = 3303
# SHAKE128 rate: squeezing whole blocks is what the reference implementations do, and three of them give ~273
# candidates for 256 slots (acceptance 3329/4096), so a retry is rare.
_XOF_BLOCK: Final = 168
_XOF_FIRST_SQUEEZE: Final = 3 * _XOF_BLOCK

Array = npt.NDArray[np.int64]


def _bit_reverse7(value: int) -> int:
    return int(f"{value:07b}"[::-1], 2)


# zeta = 17 is the primitive 256th root of unity mod q that both standards use.
_ZETAS: Final = [pow(17, _bit_reverse7(i), Q) for i in range(128)]
_GAMMAS: Final = np.array([pow(17, 2 * _bit_reverse7(i) + 1, Q) for i in range(128)], dtype=np.int64)


def _forward_layers(rows: Array, lengths: tuple[int, ...]) -> Array:
    """The layers of FIPS 203 Algorithm 9 with the given butterfly lengths, on every row of ``rows``, one whole
    layer at a time. The layer of length L has N / 2L groups and uses zetas N / 2L .. N / L - 1."""
    f = rows.copy()
    for length in lengths:
        groups = N // (2 * length)
        view = f.reshape(f.shape[0], groups, 2, length)
        zetas = np.array(_ZETAS[groups : 2 * groups], dtype=np.int64).reshape(1, groups, 1)
        t = (zetas * view[:, :, 1, :]) % Q
        low = view[:, :, 0, :].copy()
        view[:, :, 1, :] = (low - t) % Q
        view[:, :, 0, :] = (low + t) % Q
    return f


def _inverse_layers(rows: Array, lengths: tuple[int, ...]) -> Array:
    """The layers of FIPS 203 Algorithm 10 with the given butterfly lengths (without its final scaling by 128^-1),
    on every row of ``rows``: it walks the zetas downwards, the layer of length L using N / L - 1 .. N / 2L."""
    f = rows.copy()
    for length in lengths:
        groups = N // (2 * length)
        view = f.reshape(f.shape[0], groups, 2, length)
        zetas = np.array(_ZETAS[groups : 2 * groups][::-1], dtype=np.int64).reshape(1, groups, 1)
        low = view[:, :, 0, :].copy()
        high = view[:, :, 1, :].copy()
        view[:, :, 0, :] = (low + high) % Q
        view[:, :, 1, :] = (zetas * (high - low)) % Q
    return f


# Coefficient i = 16·m + j of a polynomial, seen as a 16x16 array [m, j]. The butterflies of length 16 and more
# pair coefficients with the same j, with zetas that depend on m only: the same 16x16 matrix mixes the m axis
# for every j. Those of length 8 and less stay inside one row m, with zetas that depend on m: one 16x16 matrix
# per row. So each transform is two products of 16x16 matrices instead of one of 256x256, about a third less
# time here. Both factors are read off the butterfly loops run on the identity.
_ACROSS: Final = (128, 64, 32, 16)
_WITHIN: Final = (8, 4, 2)
_IDENTITY: Final = np.eye(N, dtype=np.int64)


def _across_factor(images: Array) -> npt.NDArray[np.float64]:
    """The 16x16 matrix [m_in, m_out] of layers that act across rows m (the same for every column j)."""
    return images.reshape(16, 16, 16, 16)[:, 0, :, 0].astype(np.float64)


def _within_factor(images: Array) -> npt.NDArray[np.float64]:
    """The 16x16 matrices [m][j_in, j_out] of layers that act inside each row m."""
    blocks = images.reshape(16, 16, 16, 16)
    return np.stack([blocks[m, :, m, :] for m in range(16)]).astype(np.float64)


_NTT_ACROSS: Final = _across_factor(_forward_layers(_IDENTITY, _ACROSS))
_NTT_WITHIN: Final = _within_factor(_forward_layers(_IDENTITY, _WITHIN))
_INV_NTT_WITHIN: Final = _within_factor(_inverse_layers(_IDENTITY, _WITHIN[::-1]))
# Algorithm 10's final scaling by 128^-1 is folded into its last factor.
_INV_NTT_ACROSS: Final = _across_factor((_inverse_layers(_IDENTITY, _ACROSS[::-1]) * _INV_128) % Q)


def _reduce(product: npt.NDArray[np.float64], shape: tuple[int, ...]) -> Array:
    # Inputs may be small negatives (noise) or anything in [0, q): after the first factor every value is below
    # 16·q^2 in size, after the second below 256·q^3 < 2^44, far inside float64's exact-integer range (2^53),
    # so the float products are exact integers. They are reduced after the conversion back: integer remainder
    # measured three times faster here than float64's np.mod, which has to fix up signs.
    exact: Array = product.astype(np.int64).reshape(shape)
    return exact % Q


def ntt(f: Array) -> Array:
    """The number-theoretic transform of each polynomial in ``f`` (last axis), coefficients in [0, q)."""
    rows = f.astype(np.float64).reshape(-1, 16, 16)
    across = np.matmul(_NTT_ACROSS.T, rows)  # [k, m_out, j]
    within = np.matmul(across.transpose(1, 0, 2), _NTT_WITHIN)  # [m, k, j_out]: row m by its own matrix
    return _reduce(within.transpose(1, 0, 2), f.shape)


def inverse_ntt(f_hat: Array) -> Array:
    """The inverse transform of each polynomial in ``f_hat`` (last axis), coefficients in [0, q)."""
    rows = f_hat.astype(np.float64).reshape(-1, 16, 16)
    within = np.matmul(rows.transpose(1, 0, 2), _INV_NTT_WITHIN).transpose(1, 0, 2)  # [k, m, j_out]
    return _reduce(np.matmul(_INV_NTT_ACROSS.T, within), f_hat.shape)


def _base_products(a: Array, b: Array) -> tuple[Array, Array]:
    """Unreduced even and odd coefficients of the pairwise products of NTT-domain polynomials (broadcasting).

    The gammas multiply ``b``'s odd coefficients before the products: in a matrix-vector product ``b`` is the
    vector, k times smaller than the matrix, and every term then stays below q^2.
    """
    a0, a1 = a[..., 0::2], a[..., 1::2]
    b0, b1 = b[..., 0::2], b[..., 1::2]
    even = a0 * b0 + a1 * ((b1 * _GAMMAS) % Q)
    odd = a0 * b1 + a1 * b0
    return even, odd


def _interleave(even: Array, odd: Array) -> Array:
    out = np.empty((*even.shape[:-1], N), dtype=np.int64)
    out[..., 0::2] = even % Q
    out[..., 1::2] = odd % Q
    return out


def multiply_ntts(a: Array, b: Array) -> Array:
    """The product of NTT-domain polynomials (FIPS 203 Algorithm 11), broadcasting over leading axes."""
    return _interleave(*_base_products(a, b))


def matrix_vector(matrix: Array, vector: Array, *, transpose: bool = False) -> Array:
    """``matrix ∘ vector`` (or ``matrixᵀ ∘ vector``) in the NTT domain: a ``(k, 256)`` result."""
    m = np.swapaxes(matrix, 0, 1) if transpose else matrix
    even, odd = _base_products(m, vector[np.newaxis, :, :])
    return _interleave(even.sum(axis=1), odd.sum(axis=1))


def inner_product(a: Array, b: Array) -> Array:
    """``aᵀ ∘ b`` for two ``(k, 256)`` NTT-domain vectors: one polynomial."""
    even, odd = _base_products(a, b)
    return _interleave(even.sum(axis=0), odd.sum(axis=0))


def _uniform_candidates(stream: bytes, rows: int) -> Array:
    """Every 3 bytes of each of ``rows`` equal-length streams laid end to end give two 12-bit candidates (FIPS
    203 Algorithm 7), in stream order: a ``(rows, 2 * length / 3)`` array. Each stream's length is a multiple of 3.

    The candidates are read as little-endian 16-bit words at a 3-byte stride, straight from the buffer: the first
    of each pair is the low 12 bits of the word at the triple's first byte, the second the high 12 bits of the
    word at its second byte.
    """
    count = len(stream) // 3
    out = np.empty((count, 2), dtype=np.int64)
    out[:, 0] = np.ndarray((count,), dtype="<u2", buffer=stream, offset=0, strides=(3,)) & 0x0FFF
    out[:, 1] = np.ndarray((count,), dtype="<u2", buffer=stream, offset=1, strides=(3,)) >> 4
    return out.reshape(rows, -1)


def _sample_ntt_slow(seed: bytes) -> Array:
    length = _XOF_FIRST_SQUEEZE
    while True:
        length += _XOF_BLOCK
        candidates: Array = _uniform_candidates(hashlib.shake_128(seed).digest(length), 1)[0]
        accepted: Array = candidates[candidates < Q]
        if len(accepted) >= N:
            return accepted[:N]


_FIRST_N: Final = np.arange(N)


def _first_accepted(candidates: Array, accepted: npt.NDArray[np.bool_], counts: Array) -> Array:
    """Each row's first 256 accepted candidates, for rows that have that many: picked from all the accepted
    ones laid end to end, each row's run starting where the previous rows' accepted candidates end."""
    starts = np.cumsum(counts) - counts
    selected: Array = candidates[accepted][starts[:, np.newaxis] + _FIRST_N]
    return selected


def sample_matrix(rho: bytes, k: int) -> Array:
    """The public matrix Â: entry (i, j) is SampleNTT(rho || j || i), as in both standards.

    Args:
        rho: the 32-byte public seed.
        k: the module rank.

    Returns:
        A ``(k, k, 256)`` array in the NTT domain.
    """
    seeds = [rho + bytes((j, i)) for i in range(k) for j in range(k)]
    candidates = _uniform_candidates(
        b"".join(hashlib.shake_128(seed).digest(_XOF_FIRST_SQUEEZE) for seed in seeds), k * k
    )
    accepted = candidates < Q
    counts = np.count_nonzero(accepted, axis=1)
    full = counts >= N
    if full.all():
        return _first_accepted(candidates, accepted, counts).reshape(k, k, N)
    # A row short of 256 (about one in 120, so one matrix in eight at k = 4) is squeezed further alone.
    out = np.empty((k * k, N), dtype=np.int64)
    out[full] = _first_accepted(candidates[full], accepted[full], counts[full])
    for row in np.flatnonzero(~full):
        out[row] = _sample_ntt_slow(seeds[row])
    return out.reshape(k, k, N)


def prf(seed: bytes, nonce: int, eta: int) -> bytes:
    """PRF_eta(s, b) = SHAKE256(s || b), 64·eta bytes."""
    return hashlib.shake_256(seed + bytes((nonce,))).digest(64 * eta)


def sample_cbd(data: bytes, eta: int) -> Array:
    """Centered binomial samples (FIPS 203 Algorithm 8) from 64·eta bytes per polynomial.

    Args:
        data: the concatenated PRF outputs of one or more polynomials.
        eta: the distribution parameter (2 or 3).

    Returns:
        A ``(len(data) // (64·eta), 256)`` array with coefficients in [-eta, eta].
    """
    if eta == 2:  # every set this library runs: one table lookup per byte (take: a sixth of indexing's time)
        return _CBD2.take(np.frombuffer(data, dtype=np.uint8), axis=0).reshape(-1, N)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little").reshape(-1, N, 2, eta)
    sums: Array = bits.sum(axis=3, dtype=np.int64)
    return sums[:, :, 0] - sums[:, :, 1]


def _cbd2_nibble(nibble: int) -> int:
    return (nibble & 1) + (nibble >> 1 & 1) - (nibble >> 2 & 1) - (nibble >> 3 & 1)


# CBD_2 by byte: a byte holds two coefficients, its low nibble the first (bits are read least significant first).
_CBD2: Final = np.array([[_cbd2_nibble(b & 0x0F), _cbd2_nibble(b >> 4)] for b in range(256)], dtype=np.int64)


def sample_noise(seed: bytes, first_nonce: int, count: int, eta: int) -> Array:
    """``count`` CBD_eta polynomials from PRF(seed, first_nonce), PRF(seed, first_nonce + 1), ..."""
    return sample_cbd(b"".join(prf(seed, first_nonce + i, eta) for i in range(count)), eta)


def compress(x: Array, d: int) -> Array:
    """Compress_d: round(2^d / q · x) mod 2^d for x in [0, q) (no ties occur: q is odd)."""
    return (((x << d) + Q // 2) // Q) & ((1 << d) - 1)


def decompress(y: Array, d: int) -> Array:
    """Decompress_d: round(q / 2^d · y), ties rounded up as the standards do."""
    return (y * Q + (1 << (d - 1))) >> d


def byte_encode(values: Array, d: int) -> bytes:
    """ByteEncode_d (FIPS 203 Algorithm 5): d bits per coefficient, least significant bit first."""
    if d == 12:  # keys: two coefficients in three bytes, packed directly
        pairs = values.reshape(-1, 2)
        packed = np.empty((len(pairs), 3), dtype=np.uint8)
        packed[:, 0] = pairs[:, 0] & 0xFF
        packed[:, 1] = (pairs[:, 0] >> 8) | ((pairs[:, 1] & 0x0F) << 4)
        packed[:, 2] = pairs[:, 1] >> 4
        return packed.tobytes()
    bits = (values.reshape(-1, 1) >> np.arange(d, dtype=np.int64)) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def byte_decode(data: bytes, d: int) -> Array:
    """ByteDecode_d without the mod-q step of d = 12 (callers that need it check the range themselves).

    Returns:
        A ``(len(data) * 8 // (256·d), 256)`` array of d-bit values.
    """
    if d == 12:  # keys: three bytes hold two coefficients
        triples = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int64)
        first = triples[:, 0] | ((triples[:, 1] & 0x0F) << 8)
        second = (triples[:, 1] >> 4) | (triples[:, 2] << 4)
        return np.stack((first, second), axis=1).reshape(-1, N)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little").reshape(-1, d)
    values = bits.astype(np.int64) @ (np.int64(1) << np.arange(d, dtype=np.int64))
    return values.reshape(-1, N)


@dataclass(frozen=True, slots=True)
class Params:
    """One parameter set of the K-PKE scheme.

    Attributes:
        k: module rank (3 for the 768 sets, 4 for the 1024 sets).
        eta1: CBD parameter of the secret and of r.
        eta2: CBD parameter of e1 and e2.
        du: bits per coefficient of the compressed u.
        dv: bits per coefficient of the compressed v.
    """

    k: int
    eta1: int
    eta2: int
    du: int
    dv: int

    @property
    def vector_bytes(self) -> int:
        """Size of a 12-bit encoded vector (t̂ or ŝ)."""
        return 384 * self.k

    @property
    def public_key_bytes(self) -> int:
        """Size of the K-PKE public key t̂ || rho."""
        return self.vector_bytes + 32

    @property
    def c1_bytes(self) -> int:
        """Size of the compressed u."""
        return 32 * self.du * self.k

    @property
    def c2_bytes(self) -> int:
        """Size of the compressed v."""
        return 32 * self.dv

    @property
    def ciphertext_bytes(self) -> int:
        """Size of a whole ciphertext c1 || c2."""
        return self.c1_bytes + self.c2_bytes


def decode_vector(data: bytes, params: Params) -> Array | None:
    """Decodes a 12-bit encoded vector, or None if a coefficient is not below q (FIPS 203's modulus check)."""
    vector = byte_decode(data, 12)
    if vector.shape[0] != params.k or bool((vector >= Q).any()):
        return None
    return vector


def pke_keygen(rho: bytes, sigma: bytes, params: Params) -> tuple[Array, Array]:
    """K-PKE key generation from its two seeds.

    Returns:
        ``(t_hat, s_hat)``: the public noisy vector and the secret vector, both in the NTT domain.
    """
    return pke_keygen_with_matrix(sample_matrix(rho, params.k), sigma, params)


def pke_keygen_with_matrix(matrix: Array, sigma: bytes, params: Params) -> tuple[Array, Array]:
    """K-PKE key generation for a matrix already sampled (from rho), so the caller can keep it for encryption.

    Returns:
        ``(t_hat, s_hat)``: as :func:`pke_keygen`.
    """
    # s and e in one transform: one matrix product for 2k polynomials costs well under two for k each.
    noise_hat = ntt(sample_noise(sigma, 0, 2 * params.k, params.eta1))
    s_hat, e_hat = noise_hat[: params.k], noise_hat[params.k :]
    t_hat = (matrix_vector(matrix, s_hat) + e_hat) % Q
    return t_hat, s_hat


def _encryption_noise(coins: bytes, params: Params) -> tuple[Array, Array, Array]:
    """r, e1 and e2 of K-PKE encryption from its coins (nonces 0..k-1, k..2k-1, 2k)."""
    k = params.k
    if params.eta1 == params.eta2:
        noise = sample_noise(coins, 0, 2 * k + 1, params.eta1)
        return noise[:k], noise[k : 2 * k], noise[2 * k]
    r = sample_noise(coins, 0, k, params.eta1)
    rest = sample_noise(coins, k, k + 1, params.eta2)
    return r, rest[:k], rest[k]


def pke_encrypt_c1(matrix: Array, coins: bytes, params: Params) -> tuple[bytes, Array, Array]:
    """The first half of K-PKE encryption: the compressed u, which needs only the matrix.

    Args:
        matrix: Â from :func:`sample_matrix`.
        coins: the 32-byte encryption randomness r.
        params: the parameter set.

    Returns:
        ``(c1, r_hat, e2)``: the encoded compressed u, and what :func:`pke_encrypt_c2` needs to finish.
    """
    r, e1, e2 = _encryption_noise(coins, params)
    r_hat = ntt(r)
    u = (inverse_ntt(matrix_vector(matrix, r_hat, transpose=True)) + e1) % Q
    return byte_encode(compress(u, params.du), params.du), r_hat, e2


def pke_encrypt_c2(t_hat: Array, r_hat: Array, e2: Array, message: bytes, params: Params) -> bytes:
    """The second half of K-PKE encryption: the compressed v, which needs t̂ and the message.

    Args:
        t_hat: the public noisy vector.
        r_hat: from :func:`pke_encrypt_c1`.
        e2: from :func:`pke_encrypt_c1`.
        message: the 32-byte message.
        params: the parameter set.

    Returns:
        The encoded compressed v.
    """
    mu = decompress(byte_decode(message, 1)[0], 1)
    v = (inverse_ntt(inner_product(t_hat, r_hat)) + e2 + mu) % Q
    return byte_encode(compress(v, params.dv), params.dv)


def encryption_matrix(matrix: Array, t_hat: Array) -> Array:
    """Âᵀ with t̂ as one more row: a ``(k + 1, k, 256)`` array whose product with r̂ gives u's k polynomials and
    v's one together (before noise and the inverse transform), for :func:`pke_encrypt_with`.

    A public key keeps it: every encryption to the key (and every re-encryption of a decapsulation) reuses it.
    """
    return np.concatenate((np.swapaxes(matrix, 0, 1), t_hat[np.newaxis]))


def pke_encrypt_with(encryption: Array, message: bytes, coins: bytes, params: Params) -> bytes:
    """K-PKE encryption of a 32-byte message with 32 bytes of coins under a key's :func:`encryption_matrix`:
    c1 || c2, the same bytes as :func:`pke_encrypt_c1` and :func:`pke_encrypt_c2` give, in one pass."""
    k = params.k
    r, e1, e2 = _encryption_noise(coins, params)
    uv = inverse_ntt(matrix_vector(encryption, ntt(r)))
    u = (uv[:k] + e1) % Q
    v = (uv[k] + e2 + decompress(byte_decode(message, 1)[0], 1)) % Q
    return byte_encode(compress(u, params.du), params.du) + byte_encode(compress(v, params.dv), params.dv)


def pke_encrypt(t_hat: Array, rho: bytes, message: bytes, coins: bytes, params: Params) -> bytes:
    """K-PKE encryption of a 32-byte message with 32 bytes of coins: c1 || c2."""
    return pke_encrypt_with(encryption_matrix(sample_matrix(rho, params.k), t_hat), message, coins, params)


def pke_decrypt(s_hat: Array, ciphertext: bytes, params: Params) -> bytes:
    """K-PKE decryption: the 32-byte message (any ciphertext of the right size decrypts to something)."""
    u = decompress(byte_decode(ciphertext[: params.c1_bytes], params.du), params.du)
    v = decompress(byte_decode(ciphertext[params.c1_bytes :], params.dv)[0], params.dv)
    w = (v - inverse_ntt(inner_product(s_hat, ntt(u)))) % Q
    return byte_encode(compress(w, 1), 1)
