"""Statistics that decide: Welch, Fieller and BCa intervals, paired blocks, TOST equivalence,
Holm/BH across arms, diagnostics, power and runs needed.

Pure computation on arrays and DataFrames: nothing here does HTTP, runs a subprocess or reads
a file. Public names are re-exported by :mod:`pullbench`.
"""
