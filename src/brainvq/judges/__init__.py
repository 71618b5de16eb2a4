"""Everything that judges generated slices: the power-checked judges, the known-bad image sets and
the judge x set table, and the memorisation, diversity and tissue-realism metrics."""
