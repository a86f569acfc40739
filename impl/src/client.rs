//! Remote client.
