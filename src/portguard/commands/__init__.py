"""One core per verb: check, why, audit, init, reserve, dropin and the generator."""
