"""SPQR, the Sparse Post-Quantum Ratchet ("ML-KEM Braid"), as libsignal runs it through the ``spqr`` crate.

Private to parley_crypto; the Double Ratchet talks to it only through the functions re-exported here.
"""
