//! Canonical statements, signatures, archive packing, the transparency log and the verifier. Pure: no I/O runtime, no network, no database.
