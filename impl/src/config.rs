//! Config file.
