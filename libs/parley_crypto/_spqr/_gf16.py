"""Arithmetic in GF(2^16) with SPQR's reduction polynomial x^16 + x^12 + x^3 + x + 1 (``0x1100b``).

Elements are ints in ``[0, 65535]`` whose bits are polynomial coefficients; addition and subtraction are XOR.
The polynomial is primitive, so ``x`` (the element 2) generates the multiplicative group and products and
quotients go through log/antilog tables: two lookups each instead of the reference's carry-less multiply,
which pure Python cannot do cheaply. The results are the same field elements, so every byte agrees.
"""

from __future__ import annotations

POLY = 0x1100B
ORDER = 0xFFFF  # size of the multiplicative group


def _tables() -> tuple[list[int], list[int]]:
    # exp is doubled so that exp[log a + log b] needs no modular reduction.
    exp = [0] * (2 * ORDER)
    log = [0] * (ORDER + 1)
    value = 1
    for power in range(ORDER):
        exp[power] = value
        log[value] = power
        value <<= 1
        if value & 0x10000:
            value ^= POLY
    if value != 1:  # pragma: no cover - only if POLY were not primitive
        raise AssertionError("reduction polynomial is not primitive")
    exp[ORDER:] = exp[:ORDER]
    return exp, log


EXP, LOG = _tables()


def mul(a: int, b: int) -> int:
    """The product ``a * b`` in GF(2^16)."""
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def div(a: int, b: int) -> int:
    """The quotient ``a / b`` in GF(2^16).

    Raises:
        ZeroDivisionError: ``b`` is zero.
    """
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^16)")
    if a == 0:
        return 0
    return EXP[LOG[a] + ORDER - LOG[b]]


def mul_slow(a: int, b: int) -> int:
    """Carry-less long multiplication then reduction, bit by bit: the definition, kept to check the tables."""
    product = 0
    for bit in range(16):
        if b >> bit & 1:
            product ^= a << bit
    for bit in range(31, 15, -1):
        if product >> bit & 1:
            product ^= POLY << (bit - 16)
    return product
