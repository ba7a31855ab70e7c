//! The object store: one writer task applies source events and publishes snapshots.
