"""The judgement and its words: the guard, attribution, diagnosis, verdicts, remedies."""
