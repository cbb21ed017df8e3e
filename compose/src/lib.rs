//! noco-compose: the compose model (parse, validate, normalize, hash, plan). Filled in by issue 3.
