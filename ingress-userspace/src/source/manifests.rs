//! Manifest-directory source (standalone mode): reads *.yaml, *.yml, *.json and watches for changes.
